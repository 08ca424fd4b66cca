// SGD and the learning-rate schedules against values PyTorch computes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor } from '../src/tensor/index.js';
import { SGD } from '../src/train/sgd.js';
import { learningRate, parseSchedule } from '../src/train/schedule.js';
import { assertClose, testBackends } from './helpers.js';

const backends = await testBackends();

// Expected values computed with torch.optim.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
// on p = [1, -2, 3], with the gradients below, three steps:
//   p = torch.nn.Parameter(torch.tensor([1., -2., 3.]))
//   for g in ([0.5, 0.5, -1], [0.1, -0.2, 0.3], [-1, 0, 2]): p.grad = torch.tensor(g); opt.step()
const grads = [[0.5, 0.5, -1], [0.1, -0.2, 0.3], [-1, 0, 2]];
const expectedNesterov = [[0.9031, -2.0912001, 3.1842999], [0.8410741, -2.0881069, 3.1998198], [0.9834656, -2.1012375, 2.8575737]];

for (const b of backends) {
  describe(`SGD on the ${b.name} backend`, () => {
    it('matches torch.optim.SGD with Nesterov momentum and weight decay', () => {
      const p = Tensor.fromArray([1, -2, 3], [3], { requiresGrad: true, backend: b });
      const opt = new SGD([p], { lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 0.01 });
      const trace: number[][] = [];
      for (const g of grads) {
        p.grad = Tensor.fromArray(g, [3], { backend: b });
        opt.step();
        opt.zeroGrad();
        trace.push([...p.toArray()]);
      }
      trace.forEach((t, i) => assertClose(t, expectedNesterov[i], 1e-6, `after step ${i + 1}`));
      // Save and restore the momentum buffers: the next step is the same either way.
      const saved = opt.stateDict();
      const q = Tensor.fromArray(trace[2], [3], { requiresGrad: true, backend: b });
      const opt2 = new SGD([q], { lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 0.01 });
      opt2.loadStateDict(saved);
      p.grad = Tensor.fromArray([0.3, 0.3, 0.3], [3], { backend: b });
      q.grad = Tensor.fromArray([0.3, 0.3, 0.3], [3], { backend: b });
      opt.step();
      opt2.step();
      assertClose(q.toArray(), p.toArray(), 1e-7, 'resumed step');
    });
  });
}

describe('SGD arguments', () => {
  it('rejects Nesterov without momentum and negative rates', () => {
    assert.throws(() => new SGD([], { lr: 0.1, nesterov: true }), /Nesterov momentum requires a momentum > 0/);
    assert.throws(() => new SGD([], { lr: -1 }), /lr must be >= 0/);
  });
});

describe('learning-rate schedules', () => {
  it('one-cycle equals torch OneCycleLR(max_lr=0.1, total_steps=100, pct_start=0.15)', () => {
    const c = { spec: parseSchedule('onecycle:0.15', 10), lr: 0.1, totalIters: 100 };
    const at = [0, 5, 14, 15, 50, 99].map((i) => learningRate(c, i));
    assertClose(at, [0.004, 0.03117358, 0.1, 0.09996585, 0.06189691, 4e-7], 1e-6, 'one-cycle');
  });
  it('multistep divides by 10 at each milestone, given in epochs', () => {
    const c = { spec: parseSchedule('multistep:2,3', 100), lr: 0.1, totalIters: 400 };
    assertClose([0, 199, 200, 299, 300].map((i) => learningRate(c, i)), [0.1, 0.1, 0.01, 0.01, 0.001], 1e-12, 'multistep');
  });
  it('cosine with linear warm-up', () => {
    const c = { spec: parseSchedule('cosine', 1), lr: 1, totalIters: 110, warmupIters: 10, warmupStartFactor: 0 };
    assertClose([0, 5, 10, 60, 110].map((i) => learningRate(c, i)), [0, 0.5, 1, 0.5, 0], 1e-12, 'cosine');
  });
  it('rejects a malformed --schedule', () => {
    assert.throws(() => parseSchedule('multistep', 10), /needs milestones in epochs/);
    assert.throws(() => parseSchedule('linear', 10), /--schedule must be/);
  });
});
