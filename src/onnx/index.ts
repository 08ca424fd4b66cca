// ONNX export: a floor of its own above the models (it walks them), so src/io stays a leaf that
// only reads and writes files.
export { buildOnnx, exportOnnx, onnxBytes, type OnnxExportInfo, type OnnxExportOptions, type OnnxFileOptions } from './export.js';
