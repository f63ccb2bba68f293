// TypeScript declarations for dugout.js (dugout wire protocol version 2).

export type SessionState = 'connecting' | 'open' | 'reconnecting' | 'ended';

export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface ConnectOptions {
  /**
   * A JWT, or a function returning (a promise of) one; called before each (re)connect, sent as ?token=, and
   * (a function only) on each token_expiring, to refresh the token in-band.
   */
  token?: string | (() => string | Promise<string>);
  /** Where the resume token and each game's {epoch, offset} are kept, per url. Default: sessionStorage (else memory). */
  storage?: StorageLike | null;
  /** Backoff base in ms (default 1000). */
  backoffBase?: number;
  /** Backoff cap in ms (default 30000). */
  backoffCap?: number;
  /** WebSocket constructor to use (default globalThis.WebSocket); for tests. */
  WebSocket?: new (url: string) => WebSocket;
}

export interface Member {
  sid: string;
  userId: number | null;
  status: 'connected' | 'away';
}

export interface Frame<D = any> {
  type: string;
  id?: string;
  dup?: boolean;
  data: D;
}

export interface GameEventBase {
  offset: number;
  game_id: string;
  sid: string;
  user_id: number | null;
}
export interface PresenceEvent extends GameEventBase {
  status: 'joined' | 'away' | 'back' | 'left';
  reason?: 'left' | 'disconnected' | 'timeout' | 'slow_consumer' | 'expired' | 'token_expired' | 'kicked' | 'superseded';
  resume_window_ms?: number;
  away_ms?: number;
}
export interface DecisionEvent extends GameEventBase {
  decision: Record<string, unknown>;
}
export interface DiceEvent extends GameEventBase {
  dice: number[];
  results: number[];
}
export interface ResyncEvent {
  /** "not_recovered" (resumed with recovered:false), "new_session" (re-joined after the session was lost). */
  reason: 'not_recovered' | 'new_session';
  epoch: string;
  offset: number;
  members: Map<string, Member>;
}

export interface GameUpdatedEvent {
  offset: number;
  game_id: string;
  state: string | null;
  idle_timeout_ms: number | null;
  seat_policy: 'multi_seat' | 'single_seat';
}
/** This session's seat ended: its own leave(), the server's "kicked" or "superseded" (by by_sid), or "not_resumed" (it ended while the session was away). The game is not rejoined. */
export interface LeftEvent {
  game_id: string;
  reason: 'left' | 'kicked' | 'superseded' | 'not_resumed';
  by_sid: string | null;
}

export interface GameEvents {
  presence: PresenceEvent;
  game_updated: GameUpdatedEvent;
  left: LeftEvent;
  defensive_decision: DecisionEvent;
  offensive_decision: DecisionEvent;
  dice_rolled: DiceEvent;
  resync: ResyncEvent;
}

export interface StateEvent {
  state: SessionState;
  reason?: string;
  retryInMs?: number;
  /**
   * Only on the "open" of a fresh session after a refused resume: the server's resume_failed reason
   * ("unknown", "user_mismatch", "disabled", ...), or null when it gave none.
   */
  resumeFailed?: string | null;
}
/** The connection's token: warned, refreshed, a refresh that failed (retried after retryInMs), or closed 4002. */
export interface TokenEvent {
  state: 'expiring' | 'refreshed' | 'failed' | 'expired';
  /** The exp (Unix s) the server holds for this connection; null for none. */
  tokenExp: number | null;
  /** expiring: how long until exp. */
  expiresInMs?: number;
  /** failed: the invalid_token reason, "token_function" (it threw or gave nothing), "not_fresher" or "not_sent". */
  reason?: string;
  /** failed: when the next attempt is made. */
  retryInMs?: number;
}
export interface SessionEvents {
  state: StateEvent;
  expiring: { expires_in_ms: number; expires_at: string; game_id: string | null };
  ended: { code: number; reason: string };
  token: TokenEvent;
}

export class Game {
  readonly id: string;
  readonly members: Map<string, Member>;
  readonly users: Map<number | null, Member[]>;
  on<K extends keyof GameEvents>(type: K, fn: (ev: GameEvents[K]) => void): this;
  off<K extends keyof GameEvents>(type: K, fn: (ev: GameEvents[K]) => void): this;
  /** Sides of each die (1 to 10 dice of 2 to 100 sides); default [6,6,6,20]. Resolves with the dice_rolled reply. */
  roll(dice?: number[]): Promise<Frame<DiceEvent>>;
  submitDefensive(decision: Record<string, unknown>): Promise<Frame<DecisionEvent>>;
  submitOffensive(decision: Record<string, unknown>): Promise<Frame<DecisionEvent>>;
  leave(): Promise<Frame<{ game_id: string }>>;
}

export class Session {
  readonly url: string;
  readonly sid: string | null;
  readonly userId: number | null;
  readonly state: SessionState;
  readonly games: Map<string, Game>;
  /** The exp (Unix s) of this connection's token as the server holds it; null for none or anonymous. */
  readonly tokenExp: number | null;
  on<K extends keyof SessionEvents>(event: K, fn: (ev: SessionEvents[K]) => void): this;
  off<K extends keyof SessionEvents>(event: K, fn: (ev: SessionEvents[K]) => void): this;
  join(gameId: string): Promise<Game>;
  /** Sends a heartbeat. Call it on user input (or when "expiring" fires and the user is there), never on a timer. */
  stillHere(): void;
  /** Closes with 1000: the session ends for good. */
  close(): void;
  /** Cuts the connection as a network failure would (close 4999, seen as lost): the session is resumed. For demos and tests. */
  drop(): void;
  /** After "ended" (4000, 4001): start again, on the user's next action. */
  reconnect(): void;
  /** Asks the token function for a token now and sends it as refresh_token (a no-op with a string token). */
  refreshToken(): void;
}

export function connect(url: string, options?: ConnectOptions): Session;

// Pure parts, exported for tests.
export function backoffDelay(attempt: number, opts?: { base?: number; cap?: number; random?: () => number }): number;
export class GameCursor {
  constructor(epoch?: string | null, offset?: number);
  epoch: string | null;
  offset: number;
  seen: number;
  reset(epoch: string | null, offset: number): void;
  accept(offset: number): boolean;
  commit(offset: number): void;
  resumed(game: { epoch: string; offset: number; recovered: boolean }): boolean;
  toJSON(): { epoch: string | null; offset: number };
}
export class PendingActions {
  add(id: string, frame: Frame): Promise<Frame>;
  has(id: string): boolean;
  readonly size: number;
  frames(): Frame[];
  settle(reply: Frame): boolean;
  rejectAll(err: Error): void;
}
export function newId(prefix?: string): string;
export function memoryStorage(): StorageLike;
export function actionError(reply: Frame): Error & { code?: string; reply: Frame };
