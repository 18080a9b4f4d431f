import { once } from 'node:events'
import { connect, createServer, type Socket } from 'node:net'

/**
 * A connected pair of TCP sockets on 127.0.0.1 for unit tests of stream code, closed after the test:
 * the server's end (to write to) and the client's. Kept out of test-helpers, which loads the whole app.
 */
export async function socketPair(t: {
  after: (fn: () => void) => void
}): Promise<{ server: Socket; client: Socket }> {
  const srv = createServer()
  srv.listen(0, '127.0.0.1')
  await once(srv, 'listening')
  const accepted = once(srv, 'connection')
  const client = connect((srv.address() as { port: number }).port, '127.0.0.1')
  const [server] = (await accepted) as [Socket]
  t.after(() => {
    client.destroy()
    server.destroy()
    srv.close()
  })
  return { server, client }
}
