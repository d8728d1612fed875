/** `fastgen profile`: FastGen's per-head policy choice for one prompt, as a grid, a table, JSON or an SVG figure. */
import { writeFileSync } from 'node:fs';
import { formatBytes, table } from '../format.js';
import { loadModel } from '../generate/model.js';
import { cacheOptions, modelOptions, newCommand, option, outputFileArg, runCommand, toCacheOptions, toLoadOptions } from './args.js';
import { colorizer } from './format.js';
import { readStdin } from './generate.js';
import { profileGrid, profileSvg } from './profile-view.js';

export function profileCli() {
  const cmd = newCommand('fastgen profile', "FastGen's per-head policy choice for a prompt (the argument, or stdin): a grid of heads, their policies, the KV saved.").argument('[prompt...]', 'the prompt (default: read from stdin)');
  modelOptions(cmd, { kvBudget: false });
  cacheOptions(cmd, { policy: false });
  cmd
    .addOption(option('--truncate', 'keep the last tokens of a prompt longer than the context instead of failing'))
    .addOption(option('--svg <file>', 'also draw the grid as an SVG figure', outputFileArg('--svg')))
    .addOption(option('--json', 'print the whole report as JSON'));
  return cmd;
}

export function profileCommand(args: string[]): Promise<number> {
  return runCommand(profileCli(), args, async ({ opts: o, args: words }) => {
    const cache = toCacheOptions({ ...o, cache: 'fastgen' })!;
    let prompt = words.join(' ');
    if (!prompt) prompt = (await readStdin()).replace(/\n$/, '');
    const model = await loadModel(o.model, toLoadOptions(o));
    try {
      const report = await model.profile(prompt, { cache, truncatePrompt: o.truncate });
      if (o.svg) writeFileSync(o.svg, profileSvg(report, `FastGen profile: ${model.config.name}`));
      if (o.json) {
        console.log(JSON.stringify({ model: model.config.name, prompt, ...report }, null, 2));
        return 0;
      }
      console.log(profileGrid(report, colorizer(process.stdout)));
      console.log('');
      console.log(table(['policy', 'heads'], Object.entries(report.headsPerPolicy).map(([p, n]) => [p, n]), ['l', 'r']));
      console.log(
        `\nT = ${report.recovery}: ${report.promptTokens} prompt tokens, KV ${formatBytes(report.kvBytes)} of ${formatBytes(report.fullKvBytes)} ` +
          `(${(report.prunedRatio * 100).toFixed(1)} % pruned); profiling ${report.profileMs.toFixed(1)} ms of a ${report.prefillMs.toFixed(1)} ms prefill`,
      );
      if (o.svg) console.error(`wrote ${o.svg}`);
      return 0;
    } finally {
      model.dispose();
    }
  });
}
