/**
 * The `fastgen` command line: one parser (./args.ts, commander) for every command, so each has a complete --help,
 * did-you-mean for typos, and the same error style and exit codes (0 ok, 1 failed, 2 bad usage, 3 eval invariant,
 * 70 internal error). Every user error is one clear line on stderr, never a stack trace; timings go to stderr so that
 * stdout stays clean for pipes.
 */
import { CommanderError } from 'commander';
import { EXIT, newCommand, packageVersion, reportError } from './args.js';
import { watchStdout } from './stdout.js';

type Entry = (args: string[]) => Promise<number>;

/** Each command: its one-line summary and where its implementation lives (loaded only when it runs). */
const COMMANDS: Record<string, { summary: string; load: () => Promise<Entry> }> = {
  generate: { summary: 'continue a prompt (from the argument or stdin)', load: async () => (await import('./generate.js')).generateCommand },
  chat: { summary: "interactive chat (the model's chat template when it has one)", load: async () => (await import('./generate.js')).chatCommand },
  inspect: { summary: 'architecture, parameters, dtype, context; memory estimate for weights and KV', load: async () => (await import('./inspect.js')).inspectCommand },
  profile: { summary: "FastGen's per-head policy choice for a prompt (grid, --svg FILE, --json)", load: async () => (await import('./profile.js')).profileCommand },
  eval: { summary: 'quality vs. compression sweep against the baselines', load: async () => (await import('./eval.js')).evalCommand },
  bench: { summary: 'llama-bench style throughput table', load: async () => (await import('./bench.js')).benchCommand },
  serve: { summary: 'OpenAI-compatible HTTP server with continuous batching', load: async () => (await import('./serve.js')).serveCommand },
  web: { summary: 'the browser page (WebGPU or wasm threads, the per-head grid), served on loopback', load: async () => (await import('./web.js')).webCommand },
  loadtest: { summary: 'concurrent streaming clients against the server, full vs fastgen', load: async () => (await import('./loadtest.js')).loadtestCommand },
};

function program() {
  const p = newCommand('fastgen', 'LLM inference with FastGen adaptive per-head KV-cache compression.')
    .version(packageVersion(), '-V, --version', 'print the version')
    .usage('<command> [options]')
    .addHelpText('after', "\nRun 'fastgen <command> --help' for a command's options. Exit codes: 0 ok, 1 failed, 2 bad usage, 3 eval invariant failed, 70 internal error.");
  for (const [name, c] of Object.entries(COMMANDS)) p.command(name).description(c.summary);
  return p;
}

export async function main(argv: string[]): Promise<number> {
  watchStdout();
  const [cmd, ...rest] = argv;
  const entry = cmd !== undefined ? COMMANDS[cmd] : undefined;
  if (entry) {
    try {
      return await (await entry.load())(rest);
    } catch (e) {
      return reportError(e, `fastgen ${cmd}`);
    }
  }
  // No command, --help, --version, `help [command]`, or something unknown: the top-level parser answers.
  if (cmd === 'help' && rest[0] !== undefined && COMMANDS[rest[0]]) return main([rest[0], '--help']);
  const p = program();
  if (cmd === undefined) {
    process.stderr.write(p.helpInformation());
    return EXIT.usage;
  }
  try {
    await p.parseAsync(argv, { from: 'user' });
    return EXIT.ok;
  } catch (e) {
    if (e instanceof CommanderError && e.exitCode === 0) return EXIT.ok;
    if (e instanceof CommanderError) {
      const msg = e.message.replace(/^error: /, '').replace(/\n\(Did you mean (.*)\?\)/, ' (did you mean $1?)');
      process.stderr.write(`fastgen: error: ${msg}\nRun 'fastgen --help' for the commands.\n`);
      return EXIT.usage;
    }
    return reportError(e);
  }
}
