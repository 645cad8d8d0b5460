// sum_as: the `sum` task written in AssemblyScript: adds the decimal integers (whitespace-
// separated) in all its inputs and prints the total (the reduce of examples/jobs/primes-as.toml).
import { die, output, readInputs } from "./shoal_task";

const inputs = readInputs();
let total: i64 = 0;
for (let k = 0; k < inputs.length; k++) {
  const input = inputs[k];
  let i = 0;
  while (i < input.length) {
    const c = input[i];
    if (c == 0x20 || c == 0x09 || c == 0x0a || c == 0x0d) { i++; continue; }
    let negative = false;
    if (c == 0x2d) { negative = true; i++; }
    if (i >= input.length || input[i] < 0x30 || input[i] > 0x39) die("input " + k.toString() + ": expected an integer");
    let v: i64 = 0;
    while (i < input.length && input[i] >= 0x30 && input[i] <= 0x39) {
      v = v * 10 + <i64>(input[i] - 0x30);
      i++;
    }
    total += negative ? -v : v;
  }
}
output(total.toString() + "\n");
