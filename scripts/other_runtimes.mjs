// onnxruntime-web (wasm backend, one thread) runs the qdq output of scripts/ort_check.py:
// minilm_l3's mean-pooled embedding must have a cosine against fp32 of at least 0.985 on
// the first 32 evaluation sentences.
//     node other_runtimes.mjs ROOT WORK   (run where onnxruntime-web is installed)
import * as ort from 'onnxruntime-web';
import fs from 'fs';
import path from 'path';

const [root, work] = process.argv.slice(2);
ort.env.wasm.numThreads = 1;
const data = JSON.parse(fs.readFileSync(path.join(root, 'fixtures/sentences/minilm_eval.json'))).sentences.slice(0, 32);
const flat = (key) => BigInt64Array.from(data.flatMap((s) => s[key]).map(BigInt));
const dims = [data.length, data[0].input_ids.length];
async function embed(file) {
  const session = await ort.InferenceSession.create(fs.readFileSync(file).buffer, { executionProviders: ['wasm'] });
  const feeds = {
    input_ids: new ort.Tensor('int64', flat('input_ids'), dims),
    attention_mask: new ort.Tensor('int64', flat('attention_mask'), dims),
  };
  return (await session.run(feeds, ['461']))['461'];
}
const a = await embed(path.join(root, 'fixtures/models/minilm_l3.onnx'));
const b = await embed(path.join(work, 'minilm_l3_qdq.onnx'));
const width = a.dims[1];
let sum = 0;
for (let r = 0; r < data.length; r++) {
  let d = 0, x = 0, y = 0;
  for (let i = r * width; i < (r + 1) * width; i++) { d += a.data[i] * b.data[i]; x += a.data[i] ** 2; y += b.data[i] ** 2; }
  sum += d / Math.sqrt(x * y);
}
const cos = sum / data.length;
const ok = cos >= 0.985;
console.log(`${ok ? 'ok  ' : 'FAIL'} onnxruntime-web ${ort.env.versions.web} (wasm) runs minilm_l3 --form qdq   mean cosine ${cos.toFixed(4)} on ${data.length} sentences (floor 0.985)`);
process.exit(ok ? 0 : 1);
