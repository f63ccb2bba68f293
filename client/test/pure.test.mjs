import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backoffDelay, GameCursor, PendingActions, newId } from '../dugout.js';

test('backoff: full jitter within [0, min(cap, base*2^n))', () => {
  for (let n = 0; n < 12; n++) {
    const ceiling = Math.min(30000, 1000 * 2 ** n);
    assert.equal(backoffDelay(n, { random: () => 0 }), 0);
    assert.equal(backoffDelay(n, { random: () => 0.999999 }), Math.floor(0.999999 * ceiling));
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(n);
      assert.ok(d >= 0 && d < ceiling, `attempt ${n}: ${d}`);
    }
  }
  assert.equal(backoffDelay(100, { random: () => 0.5 }), 15000, 'capped at 30 s');
  assert.equal(backoffDelay(3, { base: 10, cap: 50, random: () => 0.5 }), 25, 'base and cap options');
  assert.equal(backoffDelay(-1, { random: () => 0.5 }), 500, 'negative attempt counts as 0');
});

test('backoff: jitter spreads delays (not all equal)', () => {
  const seen = new Set();
  for (let i = 0; i < 50; i++) seen.add(backoffDelay(5));
  assert.ok(seen.size > 10, `only ${seen.size} distinct delays`);
});

test('cursor: skips offsets at or below its position, advances on new ones', () => {
  const c = new GameCursor('E1', 7);
  assert.equal(c.accept(7), false);
  assert.equal(c.accept(3), false);
  assert.equal(c.accept(8), true);
  assert.equal(c.accept(8), false, 'a repeat is dropped');
  assert.equal(c.offset, 7, 'not committed until handed to the page');
  c.commit(8);
  assert.deepEqual(c.toJSON(), { epoch: 'E1', offset: 8 });
  assert.equal(c.accept(10), true, 'a jump (our own unsent back) is fine');
  c.commit(10);
  c.commit(9);
  assert.equal(c.offset, 10, 'commit never goes back');
});

test('cursor: resume recovered keeps position; not recovered or new epoch resyncs', () => {
  const c = new GameCursor('E1', 41);
  assert.equal(c.resumed({ epoch: 'E1', offset: 44, recovered: true }), false);
  assert.equal(c.offset, 41);
  assert.equal(c.accept(42), true);
  assert.equal(c.accept(43), true);

  const d = new GameCursor('E1', 41);
  assert.equal(d.resumed({ epoch: 'E1', offset: 300, recovered: false }), true);
  assert.deepEqual(d.toJSON(), { epoch: 'E1', offset: 300 });
  assert.equal(d.accept(300), false);
  assert.equal(d.accept(301), true);

  const e = new GameCursor('E1', 41);
  assert.equal(e.resumed({ epoch: 'E2', offset: 5, recovered: true }), true, 'another epoch');
  assert.deepEqual(e.toJSON(), { epoch: 'E2', offset: 5 });
});

test('pending: keyed by id, resolves once, dup replies ignored', async () => {
  const p = new PendingActions();
  const a = p.add('r1', { type: 'roll_dice', id: 'r1', data: { game_id: 'g' } });
  const b = p.add('r2', { type: 'roll_dice', id: 'r2', data: { game_id: 'g' } });
  assert.deepEqual(p.frames().map((f) => f.id), ['r1', 'r2'], 'resent in order, same ids');
  let resolved = 0;
  a.then(() => resolved++);
  assert.equal(p.settle({ type: 'dice_rolled', id: 'r1', dup: true, data: { results: [3] } }), true);
  assert.equal(p.settle({ type: 'dice_rolled', id: 'r1', data: { results: [3] } }), false, 'second reply ignored');
  assert.equal(p.settle({ type: 'dice_rolled', id: 'zz', data: {} }), false, 'unknown id');
  assert.equal(p.settle({ type: 'presence', data: {} }), false, 'no id');
  const r = await a;
  assert.deepEqual(r.data.results, [3]);
  assert.equal(r.dup, true);
  await Promise.resolve();
  assert.equal(resolved, 1);
  assert.deepEqual(p.frames().map((f) => f.id), ['r2']);
  p.settle({ type: 'error', id: 'r2', data: { code: 'not_in_game', message: 'no' } });
  await assert.rejects(b, (e) => e.code === 'not_in_game');
  assert.equal(p.size, 0);
});

test('pending: rejectAll rejects every waiting action', async () => {
  const p = new PendingActions();
  const a = p.add('x', {});
  p.rejectAll(new Error('closed'));
  await assert.rejects(a, /closed/);
  assert.equal(p.size, 0);
});

test('ids are unique and at most 64 characters', () => {
  const s = new Set();
  for (let i = 0; i < 1000; i++) {
    const id = newId('submit_defensive_decision-');
    assert.ok(id.length <= 64, id);
    s.add(id);
  }
  assert.equal(s.size, 1000);
});
