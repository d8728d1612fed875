/**
 * HAProxy's agent check (`agent-check agent-port N` on a `server` line): HAProxy connects to this port every
 * `agent-inter`, reads one line and closes. The line tells it the replica's state and the weight it wants:
 *
 *   up ready 73%      serving; 73 % of the KV budget is free by admission's reservation (1 % when full)
 *   drain             shutting down: weight 0, no new requests (the HTTP health check also fails by then)
 *   down #loading     not serving yet (or the model failed to load)
 *
 * With `balance leastconn`, HAProxy divides each server's open connections by its weight, so a replica with little
 * free KV memory gets new requests only once the others are as loaded: routing by KV memory without a router of our
 * own. It listens on its own port because an HTTP server cannot answer a peer that sends nothing.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { loadWeightPercent, type LoadFigure } from './metrics.js';

export type AgentState = { state: 'ready'; load: LoadFigure } | { state: 'draining' } | { state: 'loading' } | { state: 'failed' };

/** The agent's reply line for a state. */
export function agentReply(s: AgentState): string {
  switch (s.state) {
    case 'ready':
      return `up ready ${loadWeightPercent(s.load)}%\n`;
    case 'draining':
      return 'drain\n';
    case 'loading':
      return 'down #loading\n';
    case 'failed':
      return 'down #model failed to load\n';
  }
}

/** The agent's port could not be bound (in use, not permitted). */
export class AgentListenError extends Error {
  constructor(port: number, cause: unknown) {
    super(`cannot listen for HAProxy's agent check on port ${port}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.name = 'AgentListenError';
  }
}

export class HaproxyAgent {
  readonly server: Server;
  private readonly sockets = new Set<Socket>();

  constructor(private readonly state: () => AgentState) {
    this.server = createServer((socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
      socket.on('error', () => socket.destroy());
      // HAProxy may send an `agent-send` string first; the reply does not depend on it.
      socket.end(agentReply(this.state()));
    });
  }

  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        const a = this.server.address();
        resolve(typeof a === 'object' && a ? a.port : port);
      });
    });
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
