// A helper process: `rounds` fenced read-modify-writes of a shared counter file under lock
// `name`. The file holds "<last token> <count>"; a write fenced with a token not above the
// last one is refused (exit 2). Endpoints and CA come from DISTSYNC_ENDPOINTS / DISTSYNC_CA.
'use strict'

const fs = require('node:fs/promises')
const { Client } = require('../..')

async function main() {
  const [name, file, rounds, worker] = process.argv.slice(2)
  const client = await Client.connect()
  for (let round = 0; round < Number(rounds); round++) {
    await client.withLock(name, async (lock) => {
      const [last, count] = (await fs.readFile(file, 'utf8')).trim().split(' ').map(Number)
      if (lock.token <= last) {
        console.error(`stale token ${lock.token} after ${last}`)
        process.exit(2)
      }
      // Give another holder every chance to interleave, were the lock not exclusive.
      await new Promise((resolve) => setTimeout(resolve, 2))
      await fs.writeFile(file, `${lock.token} ${count + 1}\n`)
      await fs.appendFile(`${file}.log`, `${lock.token} ${worker}\n`)
    })
  }
  await client.close()
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
