// A helper process that takes lock `name`, prints its token and ends without closing the
// client: the process must exit on its own, and the lock be freed when the session expires.
'use strict'

const { Client } = require('../..')

Client.connect(null, { sessionTtlMs: 2000 })
  .then((client) => client.lock(process.argv[2]))
  .then((lock) => console.log(`holding ${lock.token}`))
  .catch((error) => {
    console.error(error)
    process.exit(1)
  })
