// `residual serve`: an HTTP server over a Classifier, with request batching and a small page.
export { startServer, parseBytes, type ServeOptions, type RunningServer, type Health } from './server.js';
export { Batcher, QueueFullError, type BatcherOptions, type BatcherStats } from './batcher.js';
export { pageHtml } from './page.js';
