export * from './trace.js';
export * from './blocks.js';
export * from './net.js';
export * from './resnet.js';
export * from './cifar.js';
export * from './resnext_forms.js';
export * from './registry.js';
export * from './load.js';
