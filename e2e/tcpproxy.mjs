// A TCP proxy for the browser tests, on 127.0.0.1: a page whose WebSocket goes through it can lose
// its connection the way a real network loses it, with no close frame, which no page script and no
// Playwright call can do (a page's own close always sends one).
import { once } from 'node:events';
import net from 'node:net';

// startProxy listens on 127.0.0.1 at a port of its own and forwards every connection to target
// ("host:port"). Its modes:
//   blackhole() - the links carried now stop delivering server-to-client bytes (they are dropped)
//                 while client-to-server bytes still flow: a frame the client sends reaches the server,
//                 but the reply is lost, as on a link that dies in one direction first. Links made
//                 afterwards are not affected.
//   cut()       - every link carried now is reset on both sides (RST, no close frame): the browser
//                 sees a lost connection (1006) and the server a reset, as when a network drops.
//   hold()      - new connections are accepted but not forwarded, and not read, until release():
//                 a client trying to come back stays away for as long as the test needs, with one
//                 attempt waiting rather than a stream of refused ones.
export async function startProxy(target) {
  const i = target.lastIndexOf(':');
  const host = target.slice(0, i);
  const port = Number(target.slice(i + 1));
  const links = new Set(); // { client, upstream, blackholed }
  let held = null; // client sockets waiting for release(), or null when not holding
  let accepted = 0;

  const forward = (client) => {
    const upstream = net.connect(port, host);
    const l = { client, upstream, blackholed: false };
    links.add(l);
    const end = () => {
      links.delete(l);
      client.destroy();
      upstream.destroy();
    };
    upstream.on('error', end).on('close', end).on('end', () => client.end());
    client.on('error', end).on('close', end).on('end', () => upstream.end());
    upstream.on('data', (b) => {
      if (!l.blackholed) client.write(b);
    });
    client.on('data', (b) => upstream.write(b));
    client.resume();
  };

  const server = net.createServer({ pauseOnConnect: true }, (client) => {
    accepted++;
    if (held) {
      client.on('error', () => {});
      held.push(client);
    } else {
      forward(client);
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const addr = `127.0.0.1:${server.address().port}`;

  return {
    addr,
    wsURL: `ws://${addr}/ws`,
    // accepted is how many connections the proxy has taken, held ones included.
    accepted: () => accepted,
    links: () => links.size,
    blackhole() {
      for (const l of links) l.blackholed = true;
    },
    cut() {
      for (const l of [...links]) {
        links.delete(l);
        l.client.resetAndDestroy();
        l.upstream.resetAndDestroy();
      }
    },
    hold() {
      held ??= [];
    },
    release() {
      const waiting = held ?? [];
      held = null;
      for (const c of waiting) if (!c.destroyed) forward(c);
    },
    close() {
      for (const c of held ?? []) c.destroy();
      held = null;
      this.cut();
      return new Promise((r) => server.close(() => r()));
    },
  };
}
