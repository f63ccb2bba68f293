// A typed game page using every public part of the client, checked by `tsc --noEmit` against
// dugout.d.ts (e2e/types.test.mjs). It is never run: it only has to type-check.
import { connect, type Game, type Member, type Session, type StateEvent, type TokenEvent } from '../../dugout.js';

const session: Session = connect('wss://dugout.example.com/ws', {
  token: async () => 'a.jwt.token',
  storage: sessionStorage,
  backoffBase: 1000,
  backoffCap: 30_000,
});
const fixed = connect('ws://127.0.0.1:8080/ws', { token: 'a.jwt.token', storage: null });
fixed.close();

session.on('state', (e: StateEvent) => {
  const retry: number | undefined = e.retryInMs;
  const resumeFailed: string | null | undefined = e.resumeFailed;
  console.log(e.state, e.reason, retry, resumeFailed);
});
session.on('expiring', ({ expires_in_ms, expires_at, game_id }) => console.log(`expires in ${expires_in_ms} ms`, expires_at, game_id));
session.on('ended', ({ code, reason }) => {
  if (code === 4000 || code === 4001) console.log('ended:', reason);
});
session.on('token', (e: TokenEvent) => {
  const exp: number | null = e.tokenExp;
  if (e.state === 'failed') console.log('token refresh failed:', e.reason, 'retry in', e.retryInMs);
  if (e.state === 'expiring') console.log(`token expires in ${e.expiresInMs} ms`, exp, session.tokenExp);
});
addEventListener('focus', () => session.refreshToken());
addEventListener('pointerdown', () => (session.state === 'ended' ? session.reconnect() : session.stillHere()));

async function play(): Promise<void> {
  const game: Game = await session.join('3f2b8c1e-8a8f-4d8e-9c53-8f1d2a6b7c90');
  game.on('left', ({ reason, by_sid }) => console.log('seat ended:', reason, by_sid));
  game.on('game_updated', ({ state, idle_timeout_ms, seat_policy }) => console.log(state, idle_timeout_ms, seat_policy));
  const sid: string | null = session.sid;
  const userId: number | null = session.userId;
  console.log(sid, userId, session.games.get(game.id) === game);
  for (const m of game.members.values()) {
    const status: 'connected' | 'away' = m.status;
    console.log(m.sid, m.userId, status);
  }
  const byUser: Member[] | undefined = game.users.get(42);
  console.log(byUser?.length);

  game.on('presence', (p) => console.log(p.offset, p.sid, p.status, p.reason, p.user_id));
  game.on('dice_rolled', (d) => console.log(d.dice.length, d.results.reduce((a, b) => a + b, 0)));
  game.on('defensive_decision', (d) => console.log(d.decision));
  game.on('offensive_decision', (d) => console.log(d.decision));
  game.on('resync', (r) => console.log(r.reason, r.epoch, r.offset, r.members.size));

  const rolled = await game.roll([6, 6, 20]);
  const results: number[] = rolled.data.results;
  const dup: boolean | undefined = rolled.dup;
  console.log(results, dup);
  await game.submitDefensive({ shift: 'infield_in' });
  await game.submitOffensive({ play: 'bunt' });
  try {
    await game.roll();
  } catch (err) {
    console.log((err as Error & { code?: string }).code);
  }
  const left = await game.leave();
  console.log(left.data.game_id);
  session.drop();
}
void play();
