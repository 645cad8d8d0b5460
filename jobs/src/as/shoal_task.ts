// shoal_task.ts: helpers for Shoal task programs written in AssemblyScript (the task ABI, see
// docs/task-abi.md), the counterpart of shoal_task.h, over the WASI shim's `process`.
//
// A task reads its inputs, concatenated, on stdin; SHOAL_INPUT_SIZES lists their byte lengths
// (decimal, comma-separated) when there is more than one. What it writes to stdout is its output,
// stderr its log; exit status 0 is success.

/** Writes `msg` to stderr and exits with status 2. */
export function die(msg: string): void {
  process.stderr.write(msg + "\n");
  process.exit(2);
}

/** Appends `text` (UTF-8) to the task's output. */
export function output(text: string): void {
  process.stdout.write(text);
}

/** Reads all of stdin. */
export function readStdin(): Uint8Array {
  let buf = new ArrayBuffer(1 << 16);
  let len = 0;
  while (true) {
    if (len == buf.byteLength) {
      const bigger = new ArrayBuffer(buf.byteLength * 2);
      memory.copy(changetype<usize>(bigger), changetype<usize>(buf), <usize>len);
      buf = bigger;
    }
    const n = process.stdin.read(buf, len);
    if (n <= 0) break;
    len += n;
  }
  return Uint8Array.wrap(buf, 0, len);
}

/** The task's arguments (without the program name). */
export function args(): string[] {
  const argv = process.argv;
  return argv.length > 0 ? argv.slice(1) : argv;
}

/** Reads stdin and splits it into inputs by SHOAL_INPUT_SIZES (one input when unset). */
export function readInputs(): Uint8Array[] {
  const all = readStdin();
  const sizes = process.env.has("SHOAL_INPUT_SIZES") ? process.env.get("SHOAL_INPUT_SIZES") : "";
  if (sizes.length == 0) return [all];
  const out = new Array<Uint8Array>();
  let at = 0;
  const fields = sizes.split(",");
  for (let k = 0; k < fields.length; k++) {
    const n = I32.parseInt(fields[k], 10);
    if (isNaN<f64>(<f64>n) || n < 0 || n > all.length - at) die("SHOAL_INPUT_SIZES does not match stdin");
    out.push(all.subarray(at, at + n));
    at += n;
  }
  if (at != all.length) die("SHOAL_INPUT_SIZES does not add up to the length of stdin");
  return out;
}
