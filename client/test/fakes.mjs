// The scripted fake WebSocket the Session's unit tests drive: the test plays the server, pushing
// frames and dropping the link, and reads what the client sent.
export const G = '6f9619ff-8b86-d011-b42d-00c04fd430c8';
export const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

// fakeServer returns a WebSocket constructor for connect()'s WebSocket option and every socket it made.
export function fakeServer() {
  const sockets = [];
  class FakeWS {
    constructor(url) {
      this.url = url;
      this.readyState = 1;
      this.sent = [];
      sockets.push(this);
    }
    send(s) {
      this.sent.push(JSON.parse(s));
    }
    close(code = 1000, reason = '') {
      this.readyState = 3;
      this.closedWith = code;
      queueMicrotask(() => this.onclose?.({ code, reason }));
    }
    // server side
    push(frame) {
      this.onmessage?.({ data: JSON.stringify(frame) });
    }
    drop(code = 1006, reason = '') {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
    last(type) {
      return [...this.sent].reverse().find((f) => f.type === type);
    }
    all(type) {
      return this.sent.filter((f) => f.type === type);
    }
  }
  return { FakeWS, sockets, open: () => sockets.filter((s) => s.readyState === 1) };
}
