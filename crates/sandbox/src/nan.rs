//! Deterministic floating point at low cost: canonicalise NaNs where their bits become visible.
//!
//! IEEE 754 fixes *whether* an operation's result is NaN, but not the NaN's sign and payload, which
//! differ between CPUs (x86's default NaN is negative, Arm's positive) and can depend on operand
//! order. Cranelift's `nan_canonicalization` fixes this by canonicalising the result of *every*
//! float operation, which measured 2–4× slower than native on float kernels (`docs/sandbox.md`).
//!
//! This module rewrites a module instead so that NaN bits are canonicalised only where a program
//! can observe them:
//! - before `f32.store` / `f64.store` (the value operand) and `i32.reinterpret_f32` /
//!   `i64.reinterpret_f64`: the only ways a scalar float's bits reach memory or an integer;
//! - before `f32.copysign` / `f64.copysign` (the sign operand): a NaN's sign would pick the sign of
//!   a non-NaN result;
//! - after every SIMD operation that can produce a float NaN (arithmetic, conversions, `splat`,
//!   `replace_lane`), because a `v128` is untyped and any integer lane operation reads its bits.
//!
//! Invariant: for every observation a program can make (memory, integers, comparisons, control
//! flow, output), the rewritten module behaves as if every NaN were the canonical NaN
//! (`0x7fc00000` / `0x7ff8000000000000`), which is what Cranelift's canonicalisation guarantees.
//! Comparisons, `min`/`max` results, float-to-int conversions and branching never depend on NaN
//! bits, so they need nothing. Inserted instructions are counted by fuel like any others, so fuel
//! stays deterministic (it depends on this rewrite's version, [`REWRITE_VERSION`]).

use std::borrow::Cow;
use std::convert::Infallible;

use wasm_encoder::reencode::{self, Reencode, RoundtripReencoder};
use wasm_encoder::{CodeSection, Function, Ieee32, Ieee64, Instruction, ValType};
use wasmparser::{FunctionBody, Operator, Parser, Payload};

/// Bump when the rewrite changes: fuel counts (and the disk cache) depend on it.
pub(crate) const REWRITE_VERSION: u32 = 1;

const CANONICAL_F32: u32 = 0x7fc0_0000;
const CANONICAL_F64: u64 = 0x7ff8_0000_0000_0000;

/// Returns the module with NaN canonicalisation inserted at observation points.
/// `bytes` must already be a valid binary module.
pub(crate) fn canonicalise_nans(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let params = defined_function_params(bytes)?;
    let mut rewriter = Rewriter { params, next: 0 };
    let mut module = wasm_encoder::Module::new();
    rewriter.parse_core_module(&mut module, Parser::new(0), bytes).map_err(|e| format!("{e}"))?;
    Ok(module.finish())
}

/// The parameter count of each function the module defines (not imports), in order.
fn defined_function_params(bytes: &[u8]) -> Result<Vec<u32>, String> {
    let mut type_params: Vec<u32> = Vec::new();
    let mut params = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| e.to_string())? {
            Payload::TypeSection(reader) => {
                for group in reader.into_iter_err_on_gc_types() {
                    type_params.push(group.map_err(|e| e.to_string())?.params().len() as u32);
                }
            }
            Payload::FunctionSection(reader) => {
                for ty in reader {
                    let ty = ty.map_err(|e| e.to_string())? as usize;
                    params.push(*type_params.get(ty).ok_or("function type index out of range")?);
                }
            }
            _ => {}
        }
    }
    Ok(params)
}

struct Rewriter {
    params: Vec<u32>,
    next: usize,
}

/// The three scratch locals appended to every function.
#[derive(Clone, Copy)]
struct Scratch {
    f32: u32,
    f64: u32,
    v128: u32,
}

impl Reencode for Rewriter {
    type Error = Infallible;

    fn parse_function_body(
        &mut self,
        code: &mut CodeSection,
        func: FunctionBody<'_>,
    ) -> Result<(), reencode::Error<Infallible>> {
        let params = self.params.get(self.next).copied().unwrap_or(0);
        self.next += 1;
        let mut locals = Vec::new();
        let mut count = params;
        for pair in func.get_locals_reader()? {
            let (n, ty) = pair?;
            count = count.saturating_add(n);
            locals.push((n, RoundtripReencoder.val_type(ty)?));
        }
        let scratch = Scratch { f32: count, f64: count + 1, v128: count + 2 };
        locals.extend([(1, ValType::F32), (1, ValType::F64), (1, ValType::V128)]);
        let mut f = Function::new(locals);
        let mut reader = func.get_operators_reader()?;
        while !reader.eof() {
            let op = reader.read()?;
            let when = observation(&op);
            if when == Some(Canon::ScalarBefore(F::F32)) || when == Some(Canon::ScalarBefore(F::F64)) {
                emit(&mut f, when, scratch);
            }
            f.instruction(&RoundtripReencoder.instruction(op)?);
            if matches!(when, Some(Canon::VectorAfter(_))) {
                emit(&mut f, when, scratch);
            }
        }
        code.function(&f);
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum F {
    F32,
    F64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Canon {
    /// Canonicalise the scalar on top of the stack before the operator.
    ScalarBefore(F),
    /// Canonicalise the v128 the operator leaves on the stack (lanes of this type).
    VectorAfter(F),
}

fn observation(op: &Operator<'_>) -> Option<Canon> {
    use Operator as O;
    Some(match op {
        O::F32Store { .. } | O::I32ReinterpretF32 | O::F32Copysign => Canon::ScalarBefore(F::F32),
        O::F64Store { .. } | O::I64ReinterpretF64 | O::F64Copysign => Canon::ScalarBefore(F::F64),
        O::F32x4Ceil
        | O::F32x4Floor
        | O::F32x4Trunc
        | O::F32x4Nearest
        | O::F32x4Sqrt
        | O::F32x4Add
        | O::F32x4Sub
        | O::F32x4Mul
        | O::F32x4Div
        | O::F32x4Min
        | O::F32x4Max
        | O::F32x4PMin
        | O::F32x4PMax
        | O::F32x4DemoteF64x2Zero
        | O::F32x4RelaxedMadd
        | O::F32x4RelaxedNmadd
        | O::F32x4RelaxedMin
        | O::F32x4RelaxedMax
        | O::F32x4Splat
        | O::F32x4ReplaceLane { .. } => Canon::VectorAfter(F::F32),
        O::F64x2Ceil
        | O::F64x2Floor
        | O::F64x2Trunc
        | O::F64x2Nearest
        | O::F64x2Sqrt
        | O::F64x2Add
        | O::F64x2Sub
        | O::F64x2Mul
        | O::F64x2Div
        | O::F64x2Min
        | O::F64x2Max
        | O::F64x2PMin
        | O::F64x2PMax
        | O::F64x2PromoteLowF32x4
        | O::F64x2RelaxedMadd
        | O::F64x2RelaxedNmadd
        | O::F64x2RelaxedMin
        | O::F64x2RelaxedMax
        | O::F64x2Splat
        | O::F64x2ReplaceLane { .. } => Canon::VectorAfter(F::F64),
        _ => return None,
    })
}

/// Emits `x == x ? x : canonical` for the value on top of the stack.
fn emit(f: &mut Function, canon: Option<Canon>, s: Scratch) {
    let seq: [Instruction<'static>; 6] = match canon {
        Some(Canon::ScalarBefore(F::F32)) => [
            Instruction::LocalTee(s.f32),
            Instruction::F32Const(Ieee32::new(CANONICAL_F32)),
            Instruction::LocalGet(s.f32),
            Instruction::LocalGet(s.f32),
            Instruction::F32Eq,
            Instruction::Select,
        ],
        Some(Canon::ScalarBefore(F::F64)) => [
            Instruction::LocalTee(s.f64),
            Instruction::F64Const(Ieee64::new(CANONICAL_F64)),
            Instruction::LocalGet(s.f64),
            Instruction::LocalGet(s.f64),
            Instruction::F64Eq,
            Instruction::Select,
        ],
        Some(Canon::VectorAfter(F::F32)) => [
            Instruction::LocalTee(s.v128),
            Instruction::V128Const(i128::from_le_bytes(splat(&CANONICAL_F32.to_le_bytes()))),
            Instruction::LocalGet(s.v128),
            Instruction::LocalGet(s.v128),
            Instruction::F32x4Eq,
            Instruction::V128Bitselect,
        ],
        Some(Canon::VectorAfter(F::F64)) => [
            Instruction::LocalTee(s.v128),
            Instruction::V128Const(i128::from_le_bytes(splat(&CANONICAL_F64.to_le_bytes()))),
            Instruction::LocalGet(s.v128),
            Instruction::LocalGet(s.v128),
            Instruction::F64x2Eq,
            Instruction::V128Bitselect,
        ],
        None => return,
    };
    for i in &seq {
        f.instruction(i);
    }
}

fn splat(lane: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = lane[i % lane.len()];
    }
    out
}

/// Module bytes ready to rewrite: `.wat` text is converted to binary.
pub(crate) fn binary(bytes: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    wat::parse_bytes(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_reinterprets_and_copysign_get_canonicalised() {
        let wat = r#"(module (memory 1)
            (func (param f64) (result i64)
              (f64.store (i32.const 0) (local.get 0))
              (drop (f32.copysign (f32.const 1) (f32.const 2)))
              (i64.reinterpret_f64 (local.get 0))))"#;
        let out = canonicalise_nans(&binary(wat.as_bytes()).unwrap()).unwrap();
        wasmparser::validate(&out).unwrap();
        let text = wasmprinter_like(&out);
        assert_eq!(text.matches("F64Eq").count(), 2, "store and reinterpret: {text}");
        assert_eq!(text.matches("F32Eq").count(), 1, "copysign: {text}");
    }

    /// The operator names of every function body, for counting.
    fn wasmprinter_like(bytes: &[u8]) -> String {
        let mut s = String::new();
        for p in Parser::new(0).parse_all(bytes) {
            if let Ok(Payload::CodeSectionEntry(body)) = p {
                let mut r = body.get_operators_reader().unwrap();
                while !r.eof() {
                    s.push_str(&format!("{:?}\n", r.read().unwrap()));
                }
            }
        }
        s
    }
}
