// Type declarations for cloudproxy.js.

export declare const MODE_AUTO: 0;
export declare const MODE_FORCE_UDP: 3;
export declare const MODE_FORCE_TCP: 5;

export interface ClientOptions {
  /** The control plane (or a relay's TLS port, which forwards the API): `https://relay.example`. */
  control: string;
  /** The media service's WHIP listener: `https://media.example:8444`. */
  media: string;
  /** The user's region, e.g. "japan". */
  region: string;
  /** Send the user's own DATA back to it (the media service's echo option). Default false. */
  echo?: boolean;
  /** How long a join may take before it fails. Default 15000. */
  joinTimeoutMs?: number;
  /** Offer one sendrecv audio and one sendrecv video transceiver. Default true. */
  transceivers?: boolean;
}

export type ConnectionState = "disconnected" | "connecting" | "connected" | "reconnecting" | "failed";
export type StateReason =
  | "joining"
  | "setting_proxy_server"
  | "join_success"
  | "interrupted"
  | "join_failed"
  | "leave";

/** The path in use: the selected candidate pair's local candidate. */
export interface Path {
  candidateType: "host" | "srflx" | "prflx" | "relay";
  /** Through a proxy: how the browser reaches it ("udp", "tcp" or "tls"). */
  relayProtocol: "udp" | "tcp" | "tls" | null;
  localAddress: string;
  remoteAddress: string | null;
  /** "direct" or "proxy (TURN over TLS)" and so on. */
  name: string;
}

export interface JoinInfo {
  uid: number;
  /** Members of the channel, this one included, when it joined. */
  members: number;
  /** The address the media service sees: through a proxy, the relay's relayed address. */
  seenAs: string;
  path: Path;
  usingProxy: boolean;
  elapsedMs: number;
}

export interface Message {
  from: number;
  seq: number;
  sentMicros: bigint;
  data: Uint8Array;
}

export interface ProxyConnected {
  /** Milliseconds from join() to connected. */
  elapsed: number;
  mode: "auto" | "udp" | "tcp";
  proxy: string;
  relayProtocol: string | null;
}

export interface EventMap {
  "connection-state-change": (state: ConnectionState, previous: ConnectionState, reason: StateReason) => void;
  "is-using-cloud-proxy": (using: boolean) => void;
  "proxy-connected": (info: ProxyConnected) => void;
  "join-fallback-to-proxy": (proxy: string) => void;
  message: (message: Message) => void;
  rtt: (ms: number) => void;
  error: (error: CloudProxyError) => void;
}

export declare class CloudProxyError extends Error {
  /** IN_CHANNEL, SET_NONE_FIRST, BAD_MODE, ALREADY_JOINED, NOT_JOINED, BAD_TOKEN, NOT_ENABLED,
   * JOIN_TIMEOUT, SEAT_TAKEN, CONTROL_UNREACHABLE, MEDIA_UNREACHABLE, MEDIA_<code>, ... */
  code: string;
  detail?: unknown;
}

export interface Client {
  /** Force UDP (3) or Force TCP (5); only outside a channel (else IN_CHANNEL). */
  startProxyServer(mode: 3 | 5): void;
  /** Back to Auto; only outside a channel. */
  stopProxyServer(): void;
  readonly modeName: "auto" | "udp" | "tcp";
  join(channel: string, uid: number, token: string): Promise<JoinInfo>;
  /** One DATA message; returns its sequence number. */
  send(payload: string | ArrayBuffer | Uint8Array): number;
  /** PING/PONG on the data channel: the round trip in ms. */
  ping(): Promise<number>;
  path(): Promise<Path>;
  leave(): Promise<void>;
  on<K extends keyof EventMap>(event: K, listener: EventMap[K]): () => void;
}

export declare function createClient(options: ClientOptions): Client;
