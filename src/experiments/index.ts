// The papers' experiments as functions: each writes a run folder with report.md, PNG plots and,
// for the training ones, a folder per model (metrics.jsonl, curve.jsonl, checkpoints, curves.png).
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { writeAtomic } from '../io/index.js';
import type { ClaimResult } from './markdown.js';
import * as cardinality from './cardinality.js';
import * as complexity from './complexity.js';
import * as degradation from './degradation.js';
import * as forms from './forms.js';
import type { ExperimentOptions } from './options.js';

export * from './options.js';
export { type Plan, type Recipe, HE2015_CIFAR, XIE2017_CIFAR, checkDataOption } from './training.js';
export { solveWidth, equalCostWidths } from './cardinality.js';

export interface ExperimentResult {
  experiment: string;
  out: string;
  report: string;
  figures: string[];
  /** Whether the paper's claim held at this scale (null: not decidable from this run). */
  held: boolean | null;
  seconds: number;
  /** Each claim with its verdict and evidence: what result.json holds, and EXPERIMENTS.md is written from. */
  claims: ClaimResult[];
  [key: string]: unknown;
}

export type { ClaimResult } from './markdown.js';

export interface Experiment {
  summary: string;
  run(o: ExperimentOptions): Promise<ExperimentResult>;
}

export const experiments: Record<string, Experiment> = { degradation, cardinality, forms, complexity };

export function experimentNames(): string[] {
  return Object.keys(experiments);
}

export async function runExperiment(name: string, o: ExperimentOptions): Promise<ExperimentResult> {
  const e = experiments[name];
  if (!e) throw new Error(`unknown experiment "${name}"; one of ${experimentNames().join(', ')}`);
  mkdirSync(o.out, { recursive: true });
  const r = await e.run(o);
  // Machine-readable beside report.md: one entry per claim, so a summary can be built without parsing prose.
  writeAtomic(join(o.out, 'result.json'), JSON.stringify({
    experiment: r.experiment, held: r.held, seconds: r.seconds, claims: r.claims,
    ...(r.plan ? { plan: r.plan } : {}), ...(r.models ? { models: r.models } : {}),
  }, null, 1) + '\n');
  return r;
}
