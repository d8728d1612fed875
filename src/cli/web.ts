/**
 * `fastgen web`: the page that runs fastgen in the browser, with the default model, served on loopback.
 *
 *   fastgen web [--port 8090]
 */
import { startWebServer } from '../web/server.js';
import { newCommand, numberArg, option, parseCommand } from './args.js';

export function webCli() {
  return newCommand(
    'fastgen web',
    `Serve the browser page — the same engine on WebGPU or WebAssembly threads, streamed text, tok/s, KV bytes held vs a
full cache and the layer × head grid of FastGen's choices — with the default model (stories15M), on 127.0.0.1 with
the COOP/COEP headers that make the page cross-origin isolated. Open the printed address; the page can also open a
model from a URL or from local files. Settings can come from the address:
?prompt=…&max_tokens=…&temperature=…&cache=…&recovery=…&autorun=1`,
  ).addOption(option('-p, --port <n>', 'port (default 8090; 0 = any free port)', numberArg('--port', { integer: true, min: 0, max: 65535 })));
}

export async function webCommand(args: string[]): Promise<number> {
  const parsed = parseCommand(webCli(), args);
  if (parsed === null) return 0;
  const port = (parsed.opts.port as number | undefined) ?? 8090;
  let server;
  try {
    server = await startWebServer({ port });
  } catch (e) {
    process.stderr.write(`fastgen web: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
  process.stdout.write(`fastgen web: open ${server.url} (the page and stories15M; loopback only). Ctrl-C stops.\n`);
  await new Promise<void>((resolve) => {
    const stop = () => void server.close().then(resolve);
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  return 0;
}
