// Turning numbers into pictures (and, later, markdown): charts for training runs and experiment reports.
export * from './chart.js';
export * from './runplot.js';
