import type { QoS } from 'mqtt-packet'

/** The MQTT 5 PUBLISH properties that travel with a message from publisher to subscribers. */
export interface MessageProps {
  payloadFormatIndicator?: number
  contentType?: string
  responseTopic?: string
  correlationData?: Buffer
  /** User properties exactly as encoded on the wire (0x26 entries), kept in order [MQTT-3.3.2-18]. */
  userProps?: Buffer
}

/** An application message inside the broker. Immutable once published. */
export interface Message {
  topic: string
  payload: Buffer
  qos: QoS
  retain: boolean
  props: MessageProps | null
  /** Wall-clock ms when the message expires; 0 = never. */
  expiresAt: number
  /** Client id of the publisher (for No Local), '' for the broker itself. */
  origin: string
  /** The QoS 0 frame as received, reused for subscribers of the same protocol class, and its
   * cache index; set together (no array for the common single-form case). */
  frame?: Buffer | undefined
  frameKey?: number
  /** Other encoded QoS 0 frames, reused across subscribers; index: (v5 ? 2 : 0) | (retain ? 1 : 0). */
  cache?: (Buffer | undefined)[]
}
