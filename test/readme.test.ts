// The README's promises to a TypeScript user's first hour, run as written: the fine-tuning example
// (copied out of README.md, importing 'residual' as an installed package would, without calling
// initBackend()), and an install that does not fail where the engine cannot be built.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { repoRoot } from './helpers.js';
import { writeShapesFolder } from './images.js';

const dir = mkdtempSync(join(tmpdir(), 'residual-readme-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** The first ```ts block of README.md that contains `marker`. */
function readmeBlock(marker: string): string {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  const block = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!).find((b) => b.includes(marker));
  assert.ok(block, `README.md has a ts block with ${marker}`);
  return block;
}

describe('README', () => {
  it('"Fine-tune on your images": the library example runs as written and classifies by class name', () => {
    const classes = ['cat', 'dog', 'bird'];
    const code = readmeBlock("import { runTraining, loadClassifier } from 'residual';");
    // The example's files, where it expects them: photos/{train,val}/<class>/ and resnet18.pth.
    const photos = join(dir, 'photos');
    return writeShapesFolder(photos, { train: 24, val: 8 }, 7, classes).then(() => {
      const py = spawnSync('/usr/bin/python3', [join(repoRoot, 'scripts', 'fixtures', 'finetune_pretrained.py'), join(photos, 'train'), join(dir, 'resnet18.pth'), '224'], { encoding: 'utf8' });
      assert.equal(py.status, 0, py.stderr);
      // 'residual' resolves as an installed package: through package.json's exports.
      mkdirSync(join(dir, 'node_modules'));
      symlinkSync(repoRoot, join(dir, 'node_modules', 'residual'), 'dir');
      writeFileSync(join(dir, 'example.mjs'), code);
      const env = { ...process.env };
      delete env.RESIDUAL_BACKEND;
      const r = spawnSync(process.execPath, ['example.mjs'], { cwd: dir, encoding: 'utf8', env });
      assert.equal(r.status, 0, r.stderr);
      assert.doesNotMatch(r.stderr, /reference backend/, 'without initBackend() the native engine is picked, silently');
      const acc = Number(/^test accuracy ([\d.]+)$/m.exec(r.stdout)?.[1]);
      assert.ok(acc >= 0.6, `test accuracy ${acc} (chance 0.33)`);
      assert.match(r.stdout, /^(cat|dog|bird) \d+\.\d%$/m);
    });
  });

  it('npm install without a buildable engine succeeds with a warning; the repository setup makes it an error', () => {
    const script = join(repoRoot, 'scripts', 'install-native.mjs');
    const env: NodeJS.ProcessEnv = { ...process.env, PATH: join(dir, 'no-such-bin') };
    delete env.RESIDUAL_REQUIRE_NATIVE;
    const user = spawnSync(process.execPath, [script], { encoding: 'utf8', env });
    assert.equal(user.status, 0, user.stderr);
    assert.match(user.stderr, /native oneDNN engine was not built.*\n.*reference backend.*apt-get install libdnnl-dev g\+\+ make, then npm run build:native/);
    const ci = spawnSync(process.execPath, [script], { encoding: 'utf8', env: { ...env, RESIDUAL_REQUIRE_NATIVE: '1' } });
    assert.equal(ci.status, 1);
    assert.match(ci.stderr, /RESIDUAL_REQUIRE_NATIVE=1 makes that an error/);
  });
});
