// One open-loop load step against turnomatic, driven by turnoload.py.
//
// npm `loadtest` does the sending: in requestsPerSecond mode its timer fires at a
// fixed rate whether or not earlier requests were answered, so a slow server cannot
// slow the offered load down. All requests share one keep-alive agent with a fixed
// number of connections (like wrk2's -c): a request due while every connection is
// busy waits in the agent's queue, and that wait counts in its latency, as it would
// for a client. What loadtest does not give us we record here, one
// JSON line per request: which id it asked for, when it was due (the timer's
// schedule), when it was really sent, when it ended, the status and the body. The
// latency we report is measured from the due time, so a late send (coordinated
// omission) counts against the server, not in its favour.
import { createWriteStream } from 'node:fs'
import { Agent } from 'node:http'
import { parseArgs } from 'node:util'
import { loadTest } from 'loadtest'

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },            // base URL(s), comma-separated: one picked at random per request
    rate: { type: 'string' },           // requests per second
    requests: { type: 'string' },       // requests in this step
    ids: { type: 'string' },            // comma-separated ids, one picked at random per request
    'timeout-ms': { type: 'string', default: '5000' },
    out: { type: 'string' },            // JSON lines, one per request
    connections: { type: 'string', default: '64' },
  },
})

const bases = args.url.split(',').map((url) => new URL(url))
const rate = Number(args.rate)
const total = Number(args.requests)
const ids = args.ids.split(',')
const timeoutMs = Number(args['timeout-ms'])
const intervalNs = 1e9 / rate
const out = createWriteStream(args.out)
const agent = new Agent({ keepAlive: true, maxSockets: Number(args.connections), scheduling: 'fifo' })

let t0 = null
let sent = 0
let done = 0
let ok = 0
let failed = 0
let inflight = 0
let maxLateNs = 0n
const unfinished = new Set()  // finish functions of the requests in flight

const nowNs = () => process.hrtime.bigint()
const ms = (ns) => Number(ns) / 1e6

function record(entry) {
  inflight -= 1
  done += 1
  if (entry.status === 200) ok += 1
  else failed += 1
  out.write(JSON.stringify(entry) + '\n')
}

// Called by loadtest's pool each time its fixed-rate timer fires.
function requestGenerator(options, params, request, connect) {
  const k = sent++
  const sentNs = nowNs()
  if (t0 === null) t0 = sentNs
  // The timer may fire a little early; then the request is due when it is sent.
  const scheduledNs = t0 + BigInt(Math.round(k * intervalNs))
  const dueNs = scheduledNs < sentNs ? scheduledNs : sentNs
  if (sentNs - dueNs > maxLateNs) maxLateNs = sentNs - dueNs
  // Random, not round-robin: a fixed stride could line up with a balancer's own
  // round-robin and send every request of an id to the same app.
  const id = ids[Math.floor(Math.random() * ids.length)]
  // Several bases (balancers) are spread like the DNS round-robin spreads clients.
  const base = bases[Math.floor(Math.random() * bases.length)]
  params.hostname = base.hostname
  params.host = base.hostname
  params.port = base.port
  params.path = `${base.pathname.replace(/\/$/, '')}/turno/${id}`
  params.agent = agent
  inflight += 1
  let finished = false
  const finish = (fields) => {
    if (finished) return
    finished = true
    clearTimeout(timer)
    unfinished.delete(finish)
    const endNs = nowNs()
    record({
      k, id,
      due_ms: ms(dueNs - t0),
      end_ms: ms(endNs - t0),
      latency_ms: ms(endNs - dueNs),
      send_late_ms: ms(sentNs - dueNs),
      ...fields,
    })
  }
  unfinished.add(finish)
  const req = request(params, (res) => {
    const chunks = []
    res.on('data', (chunk) => chunks.push(chunk))
    res.on('end', () => finish({ status: res.statusCode, body: Buffer.concat(chunks).toString() }))
    res.on('error', (error) => finish({ status: 0, error: String(error.message) }))
    connect(res)
  })
  // Bounded from when it was sent, queueing included: a request that takes longer is
  // abandoned and reported as an error.
  const timer = setTimeout(() => req.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs)
  req.on('error', (error) => finish({ status: 0, error: String(error.message) }))
  return req
}

const started = Date.now()
const progress = setInterval(() => {
  const seconds = ((Date.now() - started) / 1000).toFixed(0)
  process.stderr.write(
    `  ${seconds}s sent=${sent}/${total} answered=${done} ok=${ok} failed=${failed} in-flight=${inflight}\n`)
}, 1000)

// Never run much past the step's own time plus the request timeout, whatever
// happens; what is still in flight then is recorded as abandoned (its ticket, if
// the server gave one, is unknown to us).
const deadlineMs = (total / rate) * 1000 + 2 * timeoutMs + 5000
const watchdog = setTimeout(() => {
  process.stderr.write(`generator: deadline reached, ${inflight} requests abandoned\n`)
  for (const finish of [...unfinished]) finish({ status: 0, error: 'abandoned at the step deadline' })
  finishStep(3)
}, deadlineMs)

function finishStep(code) {
  clearInterval(progress)
  clearTimeout(watchdog)
  out.end(() => {
    process.stdout.write(JSON.stringify({
      sent, answered: done, ok, failed, in_flight: inflight,
      max_send_late_ms: ms(maxLateNs), wall_ms: Date.now() - started,
    }) + '\n')
    process.exit(code)
  })
}

await loadTest({
  url: new URL('turno/x', bases[0]).href,
  requestsPerSecond: rate,
  maxRequests: total,
  quiet: true,
  requestGenerator,
})
// loadtest resolves when every request has ended in its own count; wait for our
// records of the last ones to be written.
const waitForLast = setInterval(() => {
  if (inflight === 0) {
    clearInterval(waitForLast)
    finishStep(0)
  }
}, 20)
