// dugout.d.ts is checked against the module: a typed example of the whole API type-checks with
// `tsc --noEmit` (client/test/types), a misuse does not (so the check is real), and the declarations
// name exactly the module's exports. Needs only Node and the typescript package of package.json.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const client = path.resolve(here, '..', 'client');
const tsc = path.join(here, 'node_modules', '.bin', 'tsc');

// runTsc resolves with tsc's exit code and output, never rejects on a type error.
function runTsc(args) {
  return new Promise((resolve) => {
    execFile(tsc, args, { timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, out: stdout + stderr, err });
    });
  });
}

test('types: the typed example of the whole API passes tsc --noEmit', { timeout: 120_000 }, async () => {
  const r = await runTsc(['--noEmit', '-p', path.join(client, 'test', 'types')]);
  assert.equal(r.code, 0, `tsc failed:\n${r.out}`);
});

test('types: a misuse of the API fails tsc (the check sees dugout.d.ts)', { timeout: 120_000 }, async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'dugout-types-'));
  try {
    const mod = path.join(client, 'dugout.js').replaceAll('\\', '/');
    await writeFile(
      path.join(dir, 'bad.ts'),
      `import { connect } from ${JSON.stringify(mod)};\n` +
        `const s = connect('ws://127.0.0.1/ws');\n` +
        `s.join('g').then((g) => g.roll('six'));\n` + // dice are numbers
        `s.on('state', (e) => e.retryInMs.toFixed());\n`, // retryInMs may be undefined
    );
    const r = await runTsc(['--noEmit', '--strict', '--target', 'es2022', '--module', 'esnext',
      '--moduleResolution', 'bundler', '--lib', 'es2022,dom', path.join(dir, 'bad.ts')]);
    assert.notEqual(r.code, 0, `tsc accepted a misuse:\n${r.out}`);
    assert.match(r.out, /bad\.ts\(3,\d+\): error TS2345/, 'a string for the dice is refused');
    assert.match(r.out, /bad\.ts\(4,\d+\): error TS18048/, 'retryInMs is possibly undefined');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('types: dugout.d.ts declares exactly the values dugout.js exports', async () => {
  const mod = await import(pathToFileURL(path.join(client, 'dugout.js')).href);
  const dts = await readFile(path.join(client, 'dugout.d.ts'), 'utf8');
  const declared = [...dts.matchAll(/^export (?:declare )?(?:function|class|const|let) (\w+)/gm)].map((m) => m[1]);
  assert.deepEqual([...new Set(declared)].sort(), Object.keys(mod).sort());
});
