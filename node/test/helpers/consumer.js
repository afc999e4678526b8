// A helper process: consumes queue `name` with `prefetch`, acks and prints each message
// ("acked <body>"), and after `count` acks prints "ready" and waits forever with its prefetched
// messages in flight, to be killed. The session TTL is 2 s, so a killed consumer's deliveries
// return soon.
'use strict'

const { Client } = require('../..')

async function main() {
  const [name, count, prefetch] = process.argv.slice(2)
  const client = await Client.connect(null, { sessionTtlMs: 2000 })
  // next() by hand: leaving a `for await` loop would return the prefetched messages.
  const consumer = client.queue(name).consume({ prefetch: Number(prefetch) })
  for (let acked = 0; acked < Number(count); acked++) {
    const { value: message } = await consumer.next()
    await message.ack()
    console.log(`acked ${message.body.toString()}`)
  }
  console.log('ready')
  setInterval(() => {}, 1 << 30)
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
