// `residual weights`: torchvision's published weights by name: the table, fetching into the cache,
// and where a file goes for a person to put it there by hand.
import {
  fetchPretrained, isPretrainedSpec, parsePretrainedSpec, pretrainedCachePath, pretrainedCacheStatus, pretrainedEntries, residualHome,
} from '../../pretrained/index.js';
import { parse } from '../args.js';
import { downloadProgress } from '../progress.js';
import { formatTable, groupDigits } from './summary.js';

export const summary = 'pretrained weights by name (torchvision:resnet50): list, fetch into the cache, path';

const usage = `usage: residual weights list [--model M] [--json]
       residual weights fetch SPEC...
       residual weights path SPEC

  SPEC          torchvision:MODEL (torchvision's DEFAULT entry) or torchvision:MODEL.ENTRY,
                e.g. torchvision:resnet50.IMAGENET1K_V2; any command's --weights takes it too
  list          every published entry: accuracy, parameters, file, whether it is cached
  fetch         download into the cache (sha256 checked) and print each file's path
  path          print where SPEC's file goes in the cache: put a file there by hand without a network

The cache is RESIDUAL_HOME (default $XDG_CACHE_HOME/residual or ~/.cache/residual)/weights/torchvision/.
RESIDUAL_WEIGHTS_MIRROR=URL downloads from URL/<file name> instead of download.pytorch.org;
RESIDUAL_DOWNLOAD_IDLE_TIMEOUT=S gives up when no byte arrives for S seconds (default 30).`;

function specArgument(text: string): string {
  if (!isPretrainedSpec(text)) throw new Error(`weights: "${text}" is not a spec; write torchvision:MODEL[.ENTRY], e.g. torchvision:${text}`);
  return text;
}

function list(model: string | undefined, json: boolean): void {
  const rows = pretrainedEntries(model).map((e) => ({ entry: e, cached: pretrainedCacheStatus(e) }));
  if (json) {
    console.log(JSON.stringify(rows.map(({ entry: e, cached }) => ({
      spec: e.spec, model: e.model, name: e.name, default: e.isDefault, acc1: e.metrics.acc1, acc5: e.metrics.acc5,
      numParams: e.numParams, fileName: e.fileName, url: e.url, transform: e.transform, recipe: e.recipe,
      cached: cached !== 'missing', verified: cached === 'verified', path: pretrainedCachePath(e),
    }))));
    return;
  }
  const table = rows.map(({ entry: e, cached }) => [
    e.spec + (e.isDefault ? ' (default)' : ''), e.metrics.acc1.toFixed(3), e.metrics.acc5.toFixed(3), groupDigits(e.numParams),
    e.fileName, cached === 'verified' ? 'yes' : cached === 'unverified' ? 'yes (checked on first use)' : 'no',
  ]);
  console.log(formatTable(['spec', 'acc@1', 'acc@5', 'params', 'file', 'cached'], table, ['l', 'r', 'r', 'r', 'l', 'l']));
  console.log(`\ncache: ${residualHome()}/weights/torchvision (RESIDUAL_HOME); accuracy: ImageNet-1K validation, as torchvision publishes it`);
}

export async function run(argv: string[]): Promise<number> {
  const { values: v, positionals } = parse('weights', argv, { model: { type: 'string' }, json: { type: 'boolean' } }, true);
  if (v.help) {
    console.log(usage);
    return 0;
  }
  const [action, ...specs] = positionals;
  switch (action) {
    case 'list':
      if (specs.length) throw new Error(`weights list takes no positional arguments (got ${specs.join(' ')}); use --model M to pick one model`);
      list(v.model, v.json === true);
      return 0;
    case 'fetch':
      if (!specs.length) throw new Error(`weights fetch: name at least one SPEC, e.g. torchvision:resnet50\n${usage}`);
      // Every name is checked before the first download starts.
      for (const s of specs) parsePretrainedSpec(specArgument(s));
      for (const s of specs) console.log((await fetchPretrained(s, { onProgress: downloadProgress('weights') })).path);
      return 0;
    case 'path':
      if (specs.length !== 1) throw new Error(`weights path takes one SPEC, e.g. residual weights path torchvision:resnet50\n${usage}`);
      console.log(pretrainedCachePath(parsePretrainedSpec(specArgument(specs[0]!))));
      return 0;
    default:
      console.error(`weights: ${action ? `unknown action "${action}"` : 'missing action'}; use list, fetch or path\n${usage}`);
      return 2;
  }
}
