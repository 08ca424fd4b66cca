// torchvision's published ImageNet weights for the ten ResNet/ResNeXt builders, as data. Copied from
// torchvision 0.14 (models/resnet.py, the *_Weights enums); test/pretrained.test.ts compares every
// field with torchvision itself, so a typo here fails a test rather than a user's accuracy.
import { IMAGENET_CLASSES } from '../data/labels.js';

/** Where torchvision's weight files live; RESIDUAL_WEIGHTS_MIRROR replaces it. */
export const TORCHVISION_BASE_URL = 'https://download.pytorch.org/models/';

/**
 * The preprocessing the weights were evaluated with (torchvision's ImageClassification preset):
 * resize the shorter side to `resizeSize`, center-crop `cropSize`, scale to [0, 1], normalize.
 */
export interface EvalTransform {
  readonly resizeSize: number;
  readonly cropSize: number;
  readonly mean: readonly [number, number, number];
  readonly std: readonly [number, number, number];
  readonly interpolation: 'bilinear';
}

/** One named set of pretrained weights, e.g. torchvision's ResNet50_Weights.IMAGENET1K_V2. */
export interface PretrainedEntry {
  /** Where the name comes from; the first part of the spec (`torchvision:`) and the cache subfolder. */
  readonly source: 'torchvision';
  /** The builder the weights fit, e.g. `resnet50`. */
  readonly model: string;
  /** The entry's name in torchvision's enum, e.g. `IMAGENET1K_V2`. */
  readonly name: string;
  /** `torchvision:<model>.<name>`: what --weights takes to name exactly these weights. */
  readonly spec: string;
  /** Whether torchvision's `DEFAULT` is this entry (what `torchvision:<model>` picks). */
  readonly isDefault: boolean;
  readonly url: string;
  /** The file's name in the cache; torchvision's carry a sha256 prefix after the last '-'. */
  readonly fileName: string;
  readonly transform: EvalTransform;
  /** Class names in the order of the classifier's outputs. */
  readonly categories: readonly string[];
  /** Published accuracy (percent) on the ImageNet-1K validation set, single crop. */
  readonly metrics: { readonly dataset: 'ImageNet-1K'; readonly acc1: number; readonly acc5: number };
  readonly numParams: number;
  /** How the weights were trained. */
  readonly recipe: string;
}

const IMAGENET_MEAN = Object.freeze([0.485, 0.456, 0.406] as const);
const IMAGENET_STD = Object.freeze([0.229, 0.224, 0.225] as const);

const RECIPE_RESNET = 'https://github.com/pytorch/vision/tree/main/references/classification#resnet';
const RECIPE_RESNEXT = 'https://github.com/pytorch/vision/tree/main/references/classification#resnext';
const RECIPE_NEW = 'https://github.com/pytorch/vision/issues/3995#new-recipe';
const RECIPE_NEW_FIXRES = 'https://github.com/pytorch/vision/issues/3995#new-recipe-with-fixres';
const RECIPE_WIDE = 'https://github.com/pytorch/vision/pull/912#issue-445437439';

interface Row {
  url: string;
  /** Every entry here is evaluated at crop 224; the V2 recipes resize to 232 first, V1 to 256. */
  resizeSize: number;
  acc1: number;
  acc5: number;
  numParams: number;
  recipe: string;
}

/** Per builder: torchvision's DEFAULT and its entries, in torchvision's order. */
const TORCHVISION_WEIGHTS: Record<string, { DEFAULT: string } & Record<string, Row | string>> = {
  resnet18: {
    DEFAULT: 'IMAGENET1K_V1',
    IMAGENET1K_V1: { url: 'https://download.pytorch.org/models/resnet18-f37072fd.pth', resizeSize: 256, acc1: 69.758, acc5: 89.078, numParams: 11689512, recipe: RECIPE_RESNET },
  },
  resnet34: {
    DEFAULT: 'IMAGENET1K_V1',
    IMAGENET1K_V1: { url: 'https://download.pytorch.org/models/resnet34-b627a593.pth', resizeSize: 256, acc1: 73.314, acc5: 91.42, numParams: 21797672, recipe: RECIPE_RESNET },
  },
  resnet50: {
    DEFAULT: 'IMAGENET1K_V2',
    IMAGENET1K_V1: { url: 'https://download.pytorch.org/models/resnet50-0676ba61.pth', resizeSize: 256, acc1: 76.13, acc5: 92.862, numParams: 25557032, recipe: RECIPE_RESNET },
    IMAGENET1K_V2: { url: 'https://download.pytorch.org/models/resnet50-11ad3fa6.pth', resizeSize: 232, acc1: 80.858, acc5: 95.434, numParams: 25557032, recipe: 'https://github.com/pytorch/vision/issues/3995#issuecomment-1013906621' },
  },
  resnet101: {
    DEFAULT: 'IMAGENET1K_V2',
    IMAGENET1K_V1: { url: 'https://download.pytorch.org/models/resnet101-63fe2227.pth', resizeSize: 256, acc1: 77.374, acc5: 93.546, numParams: 44549160, recipe: RECIPE_RESNET },
    IMAGENET1K_V2: { url: 'https://download.pytorch.org/models/resnet101-cd907fc2.pth', resizeSize: 232, acc1: 81.886, acc5: 95.78, numParams: 44549160, recipe: RECIPE_NEW },
  },
  resnet152: {
    DEFAULT: 'IMAGENET1K_V2',
    IMAGENET1K_V1: { url: 'https://download.pytorch.org/models/resnet152-394f9c45.pth', resizeSize: 256, acc1: 78.312, acc5: 94.046, numParams: 60192808, recipe: RECIPE_RESNET },
    IMAGENET1K_V2: { url: 'https://download.pytorch.org/models/resnet152-f82ba261.pth', resizeSize: 232, acc1: 82.284, acc5: 96.002, numParams: 60192808, recipe: RECIPE_NEW },
  },
  resnext50_32x4d: {
    DEFAULT: 'IMAGENET1K_V2',
    IMAGENET1K_V1: { url: 'https://download.pytorch.org/models/resnext50_32x4d-7cdf4587.pth', resizeSize: 256, acc1: 77.618, acc5: 93.698, numParams: 25028904, recipe: RECIPE_RESNEXT },
    IMAGENET1K_V2: { url: 'https://download.pytorch.org/models/resnext50_32x4d-1a0047aa.pth', resizeSize: 232, acc1: 81.198, acc5: 95.34, numParams: 25028904, recipe: RECIPE_NEW },
  },
  resnext101_32x8d: {
    DEFAULT: 'IMAGENET1K_V2',
    IMAGENET1K_V1: { url: 'https://download.pytorch.org/models/resnext101_32x8d-8ba56ff5.pth', resizeSize: 256, acc1: 79.312, acc5: 94.526, numParams: 88791336, recipe: RECIPE_RESNEXT },
    IMAGENET1K_V2: { url: 'https://download.pytorch.org/models/resnext101_32x8d-110c445d.pth', resizeSize: 232, acc1: 82.834, acc5: 96.228, numParams: 88791336, recipe: RECIPE_NEW_FIXRES },
  },
  resnext101_64x4d: {
    DEFAULT: 'IMAGENET1K_V1',
    IMAGENET1K_V1: { url: 'https://download.pytorch.org/models/resnext101_64x4d-173b62eb.pth', resizeSize: 232, acc1: 83.246, acc5: 96.454, numParams: 83455272, recipe: 'https://github.com/pytorch/vision/pull/5935' },
  },
  wide_resnet50_2: {
    DEFAULT: 'IMAGENET1K_V2',
    IMAGENET1K_V1: { url: 'https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth', resizeSize: 256, acc1: 78.468, acc5: 94.086, numParams: 68883240, recipe: RECIPE_WIDE },
    IMAGENET1K_V2: { url: 'https://download.pytorch.org/models/wide_resnet50_2-9ba9bcbe.pth', resizeSize: 232, acc1: 81.602, acc5: 95.758, numParams: 68883240, recipe: RECIPE_NEW_FIXRES },
  },
  wide_resnet101_2: {
    DEFAULT: 'IMAGENET1K_V2',
    IMAGENET1K_V1: { url: 'https://download.pytorch.org/models/wide_resnet101_2-32ee1156.pth', resizeSize: 256, acc1: 78.848, acc5: 94.284, numParams: 126886696, recipe: RECIPE_WIDE },
    IMAGENET1K_V2: { url: 'https://download.pytorch.org/models/wide_resnet101_2-d733dc28.pth', resizeSize: 232, acc1: 82.51, acc5: 96.02, numParams: 126886696, recipe: RECIPE_NEW },
  },
};

function fileNameOf(url: string): string {
  return url.slice(url.lastIndexOf('/') + 1);
}

function buildEntries(): readonly PretrainedEntry[] {
  const out: PretrainedEntry[] = [];
  for (const [model, { DEFAULT, ...rows }] of Object.entries(TORCHVISION_WEIGHTS)) {
    for (const [name, row] of Object.entries(rows)) {
      const r = row as Row;
      out.push(Object.freeze({
        source: 'torchvision',
        model,
        name,
        spec: `torchvision:${model}.${name}`,
        isDefault: name === DEFAULT,
        url: r.url,
        fileName: fileNameOf(r.url),
        transform: Object.freeze({ resizeSize: r.resizeSize, cropSize: 224, mean: IMAGENET_MEAN, std: IMAGENET_STD, interpolation: 'bilinear' }),
        categories: IMAGENET_CLASSES,
        metrics: Object.freeze({ dataset: 'ImageNet-1K', acc1: r.acc1, acc5: r.acc5 }),
        numParams: r.numParams,
        recipe: r.recipe,
      } as const));
    }
  }
  return Object.freeze(out);
}

/** Every entry, grouped by model in the order of the builders, each model's entries in torchvision's order. */
export const PRETRAINED_ENTRIES: readonly PretrainedEntry[] = buildEntries();
