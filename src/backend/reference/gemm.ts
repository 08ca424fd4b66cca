// The one matrix product the reference convolution needs, written so V8 keeps a 4x4 block of
// sums in registers: C[m, n] += sum_k A[m, k] * B[n, k], both operands row-major with k
// contiguous ("A times B transposed"). Sums are float64; that is also what makes the reference
// more accurate than the float32 kernels it judges.

/**
 * C[cOff + m*N + n] += sum over k < K of A[aOff + m*K + k] * B[bOff + n*K + k], for m < M, n < N.
 */
export function gemmABt(A: Float32Array, aOff: number, B: Float32Array, bOff: number, C: Float64Array, cOff: number,
  M: number, N: number, K: number): void {
  const M4 = M - (M % 4), N4 = N - (N % 4);
  for (let m = 0; m < M4; m += 4) {
    const a0 = aOff + m * K, a1 = a0 + K, a2 = a1 + K, a3 = a2 + K;
    const r0 = cOff + m * N, r1 = r0 + N, r2 = r1 + N, r3 = r2 + N;
    for (let n = 0; n < N4; n += 4) {
      const b0 = bOff + n * K, b1 = b0 + K, b2 = b1 + K, b3 = b2 + K;
      let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
      let c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
      for (let k = 0; k < K; k++) {
        const x0 = A[a0 + k], x1 = A[a1 + k], x2 = A[a2 + k], x3 = A[a3 + k];
        const y0 = B[b0 + k], y1 = B[b1 + k], y2 = B[b2 + k], y3 = B[b3 + k];
        c00 += x0 * y0; c01 += x0 * y1; c02 += x0 * y2; c03 += x0 * y3;
        c10 += x1 * y0; c11 += x1 * y1; c12 += x1 * y2; c13 += x1 * y3;
        c20 += x2 * y0; c21 += x2 * y1; c22 += x2 * y2; c23 += x2 * y3;
        c30 += x3 * y0; c31 += x3 * y1; c32 += x3 * y2; c33 += x3 * y3;
      }
      C[r0 + n] += c00; C[r0 + n + 1] += c01; C[r0 + n + 2] += c02; C[r0 + n + 3] += c03;
      C[r1 + n] += c10; C[r1 + n + 1] += c11; C[r1 + n + 2] += c12; C[r1 + n + 3] += c13;
      C[r2 + n] += c20; C[r2 + n + 1] += c21; C[r2 + n + 2] += c22; C[r2 + n + 3] += c23;
      C[r3 + n] += c30; C[r3 + n + 1] += c31; C[r3 + n + 2] += c32; C[r3 + n + 3] += c33;
    }
    // the last N % 4 columns, four rows at a time
    for (let n = N4; n < N; n++) {
      const b0 = bOff + n * K;
      let c0 = 0, c1 = 0, c2 = 0, c3 = 0;
      for (let k = 0; k < K; k++) {
        const y = B[b0 + k];
        c0 += A[a0 + k] * y; c1 += A[a1 + k] * y; c2 += A[a2 + k] * y; c3 += A[a3 + k] * y;
      }
      C[r0 + n] += c0; C[r1 + n] += c1; C[r2 + n] += c2; C[r3 + n] += c3;
    }
  }
  // the last M % 4 rows, four columns at a time
  for (let m = M4; m < M; m++) {
    const a0 = aOff + m * K, r0 = cOff + m * N;
    for (let n = 0; n < N4; n += 4) {
      const b0 = bOff + n * K, b1 = b0 + K, b2 = b1 + K, b3 = b2 + K;
      let c0 = 0, c1 = 0, c2 = 0, c3 = 0;
      for (let k = 0; k < K; k++) {
        const x = A[a0 + k];
        c0 += x * B[b0 + k]; c1 += x * B[b1 + k]; c2 += x * B[b2 + k]; c3 += x * B[b3 + k];
      }
      C[r0 + n] += c0; C[r0 + n + 1] += c1; C[r0 + n + 2] += c2; C[r0 + n + 3] += c3;
    }
    for (let n = N4; n < N; n++) {
      const b0 = bOff + n * K;
      let c = 0;
      for (let k = 0; k < K; k++) c += A[a0 + k] * B[b0 + k];
      C[r0 + n] += c;
    }
  }
}
