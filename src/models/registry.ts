// Every model by name, with its default input and, from the analytic walk, its parameters and MACs.
import { cifarSpecs, type CifarResNetOptions } from './cifar.js';
import { ResNet, inputChannels, traceNet, type NetSpec } from './net.js';
import { imagenetSpecs, type ResNetOptions } from './resnet.js';
import { resnetDSpecs } from './resnet_d.js';
import type { TraceResult } from './trace.js';

/** Options any registered builder accepts; each family ignores none silently (see `spec`). */
export type ModelOptions = ResNetOptions & CifarResNetOptions;

export interface ModelEntry {
  name: string;
  family: 'imagenet' | 'cifar';
  description: string;
  /** [C, H, W] the model is meant for (its figures below are at this input, batch 1). */
  defaultInput: [number, number, number];
  spec(opts?: ModelOptions): NetSpec;
  build(opts?: ModelOptions, build?: BuildOptions): ResNet;
}

export interface BuildOptions {
  /** false: skip the He init, for a model whose weights are loaded next (much faster to build). */
  initWeights?: boolean;
}

const descriptions: Record<string, string> = {
  resnet18: 'ResNet-18, basic blocks [2,2,2,2]',
  resnet34: 'ResNet-34, basic blocks [3,4,6,3]',
  resnet50: 'ResNet-50, bottlenecks [3,4,6,3]',
  resnet101: 'ResNet-101, bottlenecks [3,4,23,3]',
  resnet152: 'ResNet-152, bottlenecks [3,8,36,3]',
  resnext50_32x4d: 'ResNeXt-50 32x4d, grouped bottlenecks',
  resnext101_32x8d: 'ResNeXt-101 32x8d, grouped bottlenecks',
  resnext101_64x4d: 'ResNeXt-101 64x4d, grouped bottlenecks',
  wide_resnet50_2: 'Wide ResNet-50-2, bottlenecks twice as wide',
  wide_resnet101_2: 'Wide ResNet-101-2, bottlenecks twice as wide',
  plain18: 'ResNet-18 without shortcuts',
  plain34: 'ResNet-34 without shortcuts',
  resnet26d: 'ResNet-26-D (timm): deep stem, average-pool shortcuts, bottlenecks [2,2,2,2]',
  resnet50d: 'ResNet-50-D (timm): deep stem, average-pool shortcuts, bottlenecks [3,4,6,3]',
  resnext50d_32x4d: 'ResNeXt-50-D 32x4d (timm): deep stem, average-pool shortcuts',
  resnext29_8x64d: 'CIFAR ResNeXt-29 8x64d (Xie et al.)',
  resnext29_16x64d: 'CIFAR ResNeXt-29 16x64d (Xie et al.)',
};

function cifarDescription(name: string): string {
  const depth = Number(name.replace(/^\D+/, ''));
  return name.startsWith('plain')
    ? `CIFAR plain-${depth}, no shortcuts (He et al.)`
    : `CIFAR ResNet-${depth}, option-A shortcuts (He et al.)`;
}

function entries(): ModelEntry[] {
  const out: ModelEntry[] = [];
  for (const [name, make] of Object.entries({ ...imagenetSpecs, ...resnetDSpecs })) {
    const spec = (o: ModelOptions = {}) => make(rejectOptions(name, o, ['shortcut']));
    out.push({ name, family: 'imagenet', description: descriptions[name], defaultInput: [3, 224, 224], spec, build: (o, b) => new ResNet(spec(o), b) });
  }
  for (const [name, make] of Object.entries(cifarSpecs)) {
    const spec = (o: ModelOptions = {}) => (make as (o: ModelOptions) => NetSpec)(
      rejectOptions(name, o, ['groups', 'widthPerGroup', 'replaceStrideWithDilation', ...(name.startsWith('resnext') ? ['shortcut'] : [])]));
    out.push({
      name, family: 'cifar', description: descriptions[name] ?? cifarDescription(name), defaultInput: [3, 32, 32], spec,
      build: (o, b) => new ResNet(spec(o), b),
    });
  }
  return out;
}

function rejectOptions(name: string, o: ModelOptions, unsupported: string[]): ModelOptions {
  const bad = unsupported.filter((k) => (o as Record<string, unknown>)[k] !== undefined);
  if (bad.length) throw new Error(`${name} does not take the option${bad.length > 1 ? 's' : ''} ${bad.join(', ')}`);
  return o;
}

let registry: Map<string, ModelEntry> | null = null;

function all(): Map<string, ModelEntry> {
  registry ??= new Map(entries().map((e) => [e.name, e]));
  return registry;
}

export function modelNames(): string[] {
  return [...all().keys()];
}

export function listModels(): ModelEntry[] {
  return [...all().values()];
}

/** The entry of a model; an unknown name gets an error that lists the known ones. */
export function getModel(name: string): ModelEntry {
  const e = all().get(name);
  if (!e) throw new Error(`unknown model "${name}". Known models: ${modelNames().join(', ')}`);
  return e;
}

/** Builds a registered model by name. */
export function createModel(name: string, opts?: ModelOptions, build?: BuildOptions): ResNet {
  return getModel(name).build(opts, build);
}

/** The layer walk of a registered model at `input` ([C, H, W], default the model's own), batch 1. */
export function traceModel(name: string, input?: readonly number[], opts?: ModelOptions): TraceResult {
  const e = getModel(name);
  const spec = e.spec(opts);
  const shape = input ?? [inputChannels(spec), e.defaultInput[1], e.defaultInput[2]];
  return traceNet(spec, shape);
}

export interface ModelFigures {
  name: string;
  family: string;
  description: string;
  input: number[];
  params: number;
  macs: number;
}

export function modelFigures(name: string): ModelFigures {
  const e = getModel(name);
  const t = traceModel(name);
  return { name, family: e.family, description: e.description, input: [...e.defaultInput], params: t.params, macs: t.macs };
}
