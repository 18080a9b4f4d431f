/** What the broker hands to ingest for every PUBLISH a client sends (wills included). */
export type BrokerMessage = {
  topic: string
  payload: Buffer
  clientId: string
  qos: 0 | 1 | 2
  messageId: number | undefined
  dup: boolean
  retain: boolean
  receivedAt: Date
}
