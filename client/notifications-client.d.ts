// Public types of notifications-client.js (websocket-service's notifications.v2 client).

/** The subprotocol this client speaks: "notifications.v2". */
export declare const PROTOCOL: 'notifications.v2';

/** Why getToken is being called. */
export type TokenReason =
  /** before a connect (first one, or a reconnect after a close that was not about the token) */
  | 'connect'
  /** ahead of the current token's expiry, for an in-band refresh on the open connection */
  | 'refresh'
  /** the server refused the last token (AUTH_FAILED, or a 1008 close): do not return it again */
  | 'rejected'
  /** the server closed because the token expired (TOKEN_EXPIRED): return a fresh one */
  | 'expired';

export type TokenProvider = (context: { reason: TokenReason }) => string | Promise<string>;

/**
 * The part of the browser WebSocket interface the client uses. Handlers take `any` so that the
 * DOM WebSocket, Node's and npm ws's (each with its own event classes) all fit; the client
 * reads `data` of a message event and `code`/`reason` of a close event.
 */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol: string;
  binaryType: string;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocketLike;

/** A sessionStorage-like store for the cursors, so a page reload resumes. */
export interface CursorStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

/** Timer functions and the clock (tests inject fakes). */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
}

export interface ClientOptions {
  /** One URL (e.g. behind a load balancer) or a list rotated through on each reconnect. */
  url: string | string[];
  /** Returns the JWT; called before each connect and ahead of expiry. */
  getToken: TokenProvider;
  /** WebSocket constructor; default globalThis.WebSocket. Pass npm `ws` on older Node. */
  WebSocket?: WebSocketConstructor;
  /** Keeps cursors across page reloads (e.g. window.sessionStorage). */
  storage?: CursorStorage;
  /** Storage key; include the user id. Default "notifications.v2.cursors". */
  storageKey?: string;
  /** Ceiling of the first reconnect delay, ms (default 1000); doubles per failed attempt. */
  initialDelayMs?: number;
  /** Cap of any reconnect delay ceiling, ms (default 30000). */
  maxDelayMs?: number;
  /** Added to the delay after CONNECTION_LIMIT or RATE_LIMITED, ms (default 10000). */
  throttleDelayMs?: number;
  /** Open this long and the backoff starts over, ms (default 10000). */
  resetAfterMs?: number;
  /** A socket not open after this is abandoned and retried, ms (default 15000). */
  openTimeoutMs?: number;
  /** Refresh after this share of the token's remaining lifetime (default 0.8)... */
  refreshRatio?: number;
  /** ...but at least this long before exp, ms (default 10000); never before half of it. */
  refreshMarginMs?: number;
  /** Retry interval of a failed refresh while the token is valid, ms (default 5000). */
  refreshRetryMs?: number;
  /** Delivered cursors remembered per stream for de-duplication (default 1024). */
  dedupWindow?: number;
  /** Random source in [0, 1) for the jitter (default Math.random). */
  random?: () => number;
  /** Clock and timers (default Date.now, setTimeout, clearTimeout). */
  clock?: Clock;
}

export type State = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface MessageEvent {
  stream: string;
  /** The published payload: the JSON object/array itself, else the payload as a string. */
  data: unknown;
  /** null for a message published without a position (plain PUBLISH); it is never replayed. */
  cursor: string | null;
  /** true when it came in the replay before this connection's sync of the stream. */
  replay: boolean;
}

export interface SyncEvent {
  stream: string;
  cursor: string | null;
  /** false: messages were lost for this stream; reload its state from your own API. */
  recovered: boolean;
  /** when recovered: how many messages the replay carried. */
  replayed?: number;
  /** when not recovered: new | expired | trimmed | limit | epoch | unavailable. */
  reason?: string;
  /** when not recovered: positions skipped, when known. */
  missed?: number | null;
}

export interface StateEvent {
  state: State;
  /** connecting/open: the URL in use. */
  url?: string;
  /** connecting: failed attempts so far; reconnecting: including the one that just ended. */
  attempt?: number;
  /** reconnecting: how long until the next connect, ms. */
  delayMs?: number;
  /** reconnecting: the close code (1006 when the client gave up on the socket itself). */
  code?: number;
  reason?: string;
  /** reconnecting: the error code the server sent before closing, if any. */
  serverError?: string;
}

export interface ErrorEvent {
  /**
   * A server error code (AUTH_FAILED, TOKEN_EXPIRED, CONNECTION_LIMIT, MESSAGE_TOO_LARGE,
   * RATE_LIMITED, SLOW_CONSUMER) or the client's own: TOKEN_PROVIDER_FAILED, CONNECT_FAILED,
   * OPEN_TIMEOUT, PROTOCOL_MISMATCH, BAD_FRAME, STORAGE_FAILED, LISTENER_FAILED.
   */
  code: string;
  message: string;
  cause?: unknown;
}

export interface EventMap {
  message: MessageEvent;
  sync: SyncEvent;
  state: StateEvent;
  error: ErrorEvent;
  unsubscribed: { stream: string };
  echo: { data: unknown };
}

export declare class NotificationsClient {
  constructor(options: ClientOptions);
  readonly state: State;
  /** The saved cursor of every stream, as the next resume will send them. */
  cursors(): Record<string, string>;
  /** Adds a listener; returns the function that removes it. */
  on<K extends keyof EventMap>(type: K, listener: (event: EventMap[K]) => void): () => void;
  /** Starts connecting (idempotent). Throws once closed. */
  connect(): void;
  /** Ends the client for good. */
  close(): void;
  /** Sends a text frame for connection testing (answered by an echo event); false when not open. */
  send(text: string): boolean;
}
