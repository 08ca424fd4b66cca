export { Tensor, tensor, tidy, keep, noGrad, isGradEnabled, numel, shapeToString } from './tensor.js';
export type { GradNode } from './tensor.js';
export * from './ops.js';
