//! The module rewrite every task goes through before compilation: deterministic floating point
//! and cheap metering, both inserted as plain wasm.
//!
//! # NaN canonicalisation where NaN bits become visible
//!
//! IEEE 754 fixes *whether* an operation's result is NaN, but not the NaN's sign and payload, which
//! differ between CPUs (x86's default NaN is negative, Arm's positive) and can depend on operand
//! order. Cranelift's `nan_canonicalization` canonicalises the result of *every* float operation,
//! which measured 2–4× slower than native on float kernels (`docs/sandbox.md`). Here NaNs are
//! canonicalised only where a program can observe their bits:
//! - before `f32.store` / `f64.store` (the value operand) and `i32.reinterpret_f32` /
//!   `i64.reinterpret_f64`: the only ways a scalar float's bits reach memory or an integer;
//! - before `f32.copysign` / `f64.copysign` (the sign operand): a NaN's sign would pick the sign of
//!   a non-NaN result;
//! - after every SIMD operation that can produce a float NaN (arithmetic, conversions, `splat`,
//!   `replace_lane`), because a `v128` is untyped and any integer lane operation reads its bits.
//!
//! # Metering with checks that trap instead of call
//!
//! wasmtime's fuel and epoch checks call into the runtime on their slow path, and because every
//! XMM register is caller-saved that call makes the register allocator spill float loop state: a
//! measured 2–3× on float loops. The rewrite meters instead:
//! - **fuel**: each function keeps the remaining fuel in a local and subtracts each straight-line
//!   run's cost (1 per original operator) before every control-flow operator; it writes the
//!   local to the exported global `__shoal_fuel` before calls and wherever the function may be
//!   left, and reloads it after calls (callees and host functions spend from the global); at
//!   function entry and loop headers it traps with `unreachable` when fuel is negative;
//! - **deadline**: at the same places, an atomic load of a tick counter in the imported shared
//!   memory `shoal.clock` (advanced by the sandbox's ticker thread) is compared with the exported
//!   global `__shoal_deadline`; past it, the global is set to -1 and the code traps.
//!
//! The original memories therefore move up one index (index 0 is the clock); a `start` function
//! is removed from the start section and exported as `__shoal_start`, so the sandbox can set fuel
//! and deadline before any guest code runs.
//!
//! Invariants: for every observation a program can make, the rewritten module behaves like the
//! original with every NaN canonical (`0x7fc00000` / `0x7ff8000000000000`); it runs no guest code
//! before the sandbox calls an export; every loop iteration and every call checks fuel and deadline;
//! fuel is a deterministic function of the original code (versioned by [`REWRITE_VERSION`]).

use std::borrow::Cow;
use std::convert::Infallible;

use wasm_encoder::reencode::{self, Reencode, RoundtripReencoder};
use wasm_encoder::{
    CodeSection, ConstExpr, EntityType, ExportKind, ExportSection, Function, GlobalSection, GlobalType,
    Ieee32, Ieee64, ImportSection, Instruction, MemArg, MemoryType, SectionId, ValType,
};
use wasmparser::{FunctionBody, Operator, Parser, Payload};

/// Bump when the rewrite changes: fuel counts (and the disk cache) depend on it.
pub(crate) const REWRITE_VERSION: u32 = 4;

/// Import module and name of the shared tick-counter memory.
pub(crate) const CLOCK_MODULE: &str = "shoal";
pub(crate) const CLOCK_NAME: &str = "clock";
/// Exported globals and function added by the rewrite.
pub(crate) const FUEL_GLOBAL: &str = "__shoal_fuel";
pub(crate) const DEADLINE_GLOBAL: &str = "__shoal_deadline";
pub(crate) const START_EXPORT: &str = "__shoal_start";

const CANONICAL_F32: u32 = 0x7fc0_0000;
const CANONICAL_F64: u64 = 0x7ff8_0000_0000_0000;

/// What to insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Options {
    /// Insert fuel and deadline checks (off only for benchmarks).
    pub(crate) meter: bool,
}

/// Rewrites a valid binary module (see the module docs).
pub(crate) fn rewrite(bytes: &[u8], options: Options) -> Result<Vec<u8>, String> {
    let info = ModuleInfo::scan(bytes)?;
    let mut r = Rewriter { info, options, next_body: 0, emitted: [false; 3] };
    let mut module = wasm_encoder::Module::new();
    r.parse_core_module(&mut module, Parser::new(0), bytes).map_err(|e| format!("{e}"))?;
    let out = module.finish();
    Ok(if r.options.meter && r.info.start.is_some() { strip_start_section(&out)? } else { out })
}

/// What the rewrite needs to know before it starts writing.
#[derive(Debug, Default)]
struct ModuleInfo {
    /// Parameter count of each defined function, in order.
    params: Vec<u32>,
    /// Imported plus defined globals: the index of the first added global.
    globals: u32,
    start: Option<u32>,
}

impl ModuleInfo {
    fn scan(bytes: &[u8]) -> Result<Self, String> {
        let err = |e: wasmparser::BinaryReaderError| e.to_string();
        let mut type_params: Vec<u32> = Vec::new();
        let mut info = ModuleInfo::default();
        for payload in Parser::new(0).parse_all(bytes) {
            match payload.map_err(err)? {
                Payload::TypeSection(reader) => {
                    for ty in reader.into_iter_err_on_gc_types() {
                        type_params.push(ty.map_err(err)?.params().len() as u32);
                    }
                }
                Payload::ImportSection(reader) => {
                    for imports in reader {
                        for import in imports.map_err(err)? {
                            let (_, import) = import.map_err(err)?;
                            if matches!(import.ty, wasmparser::TypeRef::Global(_)) {
                                info.globals += 1;
                            }
                        }
                    }
                }
                Payload::FunctionSection(reader) => {
                    for ty in reader {
                        let ty = ty.map_err(err)? as usize;
                        info.params.push(*type_params.get(ty).ok_or("function type index out of range")?);
                    }
                }
                Payload::GlobalSection(reader) => info.globals += reader.count(),
                Payload::StartSection { func, .. } => info.start = Some(func),
                _ => {}
            }
        }
        Ok(info)
    }
}

struct Rewriter {
    info: ModuleInfo,
    options: Options,
    next_body: usize,
    /// Whether the added import, global and export entries were written yet.
    emitted: [bool; 3],
}

const IMPORTS: usize = 0;
const GLOBALS: usize = 1;
const EXPORTS: usize = 2;

impl Rewriter {
    fn fuel_global(&self) -> u32 {
        self.info.globals
    }

    fn deadline_global(&self) -> u32 {
        self.info.globals + 1
    }

    fn add_imports(&mut self, imports: &mut ImportSection) {
        self.emitted[IMPORTS] = true;
        let clock =
            MemoryType { minimum: 1, maximum: Some(1), memory64: false, shared: true, page_size_log2: None };
        imports.import(CLOCK_MODULE, CLOCK_NAME, EntityType::Memory(clock));
    }

    fn add_globals(&mut self, globals: &mut GlobalSection) {
        self.emitted[GLOBALS] = true;
        let ty = GlobalType { val_type: ValType::I64, mutable: true, shared: false };
        globals.global(ty, &ConstExpr::i64_const(0));
        globals.global(ty, &ConstExpr::i64_const(0));
    }

    fn add_exports(&mut self, exports: &mut ExportSection) {
        self.emitted[EXPORTS] = true;
        exports.export(FUEL_GLOBAL, ExportKind::Global, self.fuel_global());
        exports.export(DEADLINE_GLOBAL, ExportKind::Global, self.deadline_global());
        if let Some(start) = self.info.start {
            exports.export(START_EXPORT, ExportKind::Func, start);
        }
    }
}

/// Position of a section in the module order.
fn rank(id: SectionId) -> u8 {
    match id {
        SectionId::Type => 1,
        SectionId::Import => 2,
        SectionId::Function => 3,
        SectionId::Table => 4,
        SectionId::Memory => 5,
        SectionId::Tag => 6,
        SectionId::Global => 7,
        SectionId::Export => 8,
        SectionId::Start => 9,
        SectionId::Element => 10,
        SectionId::DataCount => 11,
        SectionId::Code => 12,
        SectionId::Data => 13,
        _ => 0,
    }
}

impl Reencode for Rewriter {
    type Error = Infallible;

    fn memory_index(&mut self, memory: u32) -> Result<u32, reencode::Error<Infallible>> {
        Ok(if self.options.meter { memory + 1 } else { memory })
    }

    fn parse_import_section(
        &mut self,
        imports: &mut ImportSection,
        section: wasmparser::ImportSectionReader<'_>,
    ) -> Result<(), reencode::Error<Infallible>> {
        reencode::utils::parse_import_section(self, imports, section)?;
        if self.options.meter {
            self.add_imports(imports);
        }
        Ok(())
    }

    fn parse_global_section(
        &mut self,
        globals: &mut GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> Result<(), reencode::Error<Infallible>> {
        reencode::utils::parse_global_section(self, globals, section)?;
        if self.options.meter {
            self.add_globals(globals);
        }
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<(), reencode::Error<Infallible>> {
        reencode::utils::parse_export_section(self, exports, section)?;
        if self.options.meter {
            self.add_exports(exports);
        }
        Ok(())
    }

    /// Writes the added sections a module lacks, at their place in the section order.
    fn intersperse_section_hook(
        &mut self,
        module: &mut wasm_encoder::Module,
        _after: Option<SectionId>,
        before: Option<SectionId>,
    ) -> Result<(), reencode::Error<Infallible>> {
        if !self.options.meter {
            return Ok(());
        }
        let next = before.map_or(u8::MAX, rank);
        if !self.emitted[IMPORTS] && next > rank(SectionId::Import) {
            let mut s = ImportSection::new();
            self.add_imports(&mut s);
            module.section(&s);
        }
        if !self.emitted[GLOBALS] && next > rank(SectionId::Global) {
            let mut s = GlobalSection::new();
            self.add_globals(&mut s);
            module.section(&s);
        }
        if !self.emitted[EXPORTS] && next > rank(SectionId::Export) {
            let mut s = ExportSection::new();
            self.add_exports(&mut s);
            module.section(&s);
        }
        Ok(())
    }

    fn parse_function_body(
        &mut self,
        code: &mut CodeSection,
        func: FunctionBody<'_>,
    ) -> Result<(), reencode::Error<Infallible>> {
        let params = self.info.params.get(self.next_body).copied().unwrap_or(0);
        self.next_body += 1;
        let mut locals = Vec::new();
        let mut count = params;
        for pair in func.get_locals_reader()? {
            let (n, ty) = pair?;
            count = count.saturating_add(n);
            locals.push((n, RoundtripReencoder.val_type(ty)?));
        }
        let scratch = Scratch { f32: count, f64: count + 1, v128: count + 2, fuel: count + 3 };
        locals.extend([(1, ValType::F32), (1, ValType::F64), (1, ValType::V128), (1, ValType::I64)]);
        let mut b = Body {
            f: Function::new(locals),
            s: scratch,
            fuel_global: self.fuel_global(),
            deadline_global: self.deadline_global(),
            meter: self.options.meter,
            pending: 0,
        };
        if b.meter {
            b.reload();
            b.check();
        }
        // Open blocks inside the function body: a branch to this depth leaves the function.
        let mut depth: u32 = 0;
        let mut reader = func.get_operators_reader()?;
        while !reader.eof() {
            let op = reader.read()?;
            b.pending += 1;
            let flow = control_flow(&op);
            if flow != Flow::None {
                b.flush();
            }
            if b.meter && leaves_function(&op, depth) {
                b.sync();
            }
            match &op {
                Operator::Block { .. }
                | Operator::Loop { .. }
                | Operator::If { .. }
                | Operator::TryTable { .. } => depth += 1,
                Operator::End => depth = depth.saturating_sub(1),
                _ => {}
            }
            let canon = observation(&op);
            if let Some(Canon::ScalarBefore(t)) = canon {
                b.canonicalise(Canon::ScalarBefore(t));
            }
            b.f.instruction(&self.instruction(op)?);
            if let Some(Canon::VectorAfter(t)) = canon {
                b.canonicalise(Canon::VectorAfter(t));
            }
            match flow {
                Flow::LoopHeader => b.check(),
                Flow::Call if b.meter => b.reload(),
                _ => {}
            }
        }
        code.function(&b.f);
        Ok(())
    }
}

/// Whether `op`, at `depth` open blocks, may leave the function (so the fuel global must be
/// current), including calls, whose callee reads the global.
fn leaves_function(op: &Operator<'_>, depth: u32) -> bool {
    use Operator as O;
    match op {
        O::Return
        | O::ReturnCall { .. }
        | O::ReturnCallIndirect { .. }
        | O::ReturnCallRef { .. }
        | O::Throw { .. }
        | O::ThrowRef
        | O::Call { .. }
        | O::CallIndirect { .. }
        | O::CallRef { .. } => true,
        O::End => depth == 0,
        O::Br { relative_depth } | O::BrIf { relative_depth } => *relative_depth == depth,
        O::BrOnNull { relative_depth } | O::BrOnNonNull { relative_depth } => *relative_depth == depth,
        O::BrTable { targets } => {
            targets.default() == depth || targets.targets().any(|t| t.map_or(true, |t| t == depth))
        }
        _ => false,
    }
}

/// How an operator affects the metering of the code around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Straight-line code.
    None,
    /// Ends a straight-line run (branches, block boundaries, traps).
    Boundary,
    /// `loop`: also a place to check fuel and deadline.
    LoopHeader,
    /// A call: the callee spends from the global, so reload after it.
    Call,
}

fn control_flow(op: &Operator<'_>) -> Flow {
    use Operator as O;
    match op {
        O::Loop { .. } => Flow::LoopHeader,
        O::Call { .. } | O::CallIndirect { .. } | O::CallRef { .. } => Flow::Call,
        O::Block { .. }
        | O::If { .. }
        | O::Else
        | O::End
        | O::Br { .. }
        | O::BrIf { .. }
        | O::BrTable { .. }
        | O::BrOnNull { .. }
        | O::BrOnNonNull { .. }
        | O::Return
        | O::ReturnCall { .. }
        | O::ReturnCallIndirect { .. }
        | O::ReturnCallRef { .. }
        | O::Unreachable
        | O::TryTable { .. }
        | O::Throw { .. }
        | O::ThrowRef => Flow::Boundary,
        _ => Flow::None,
    }
}

/// The scratch locals appended to every function.
#[derive(Clone, Copy)]
struct Scratch {
    f32: u32,
    f64: u32,
    v128: u32,
    fuel: u32,
}

/// A function body being written.
struct Body {
    f: Function,
    s: Scratch,
    fuel_global: u32,
    deadline_global: u32,
    meter: bool,
    /// Cost of the operators since the last flush.
    pending: u32,
}

impl Body {
    fn emit(&mut self, i: Instruction<'_>) {
        self.f.instruction(&i);
    }

    /// Charges the pending cost to the local counter: `fuel -= pending`.
    fn flush(&mut self) {
        if !self.meter || self.pending == 0 {
            self.pending = 0;
            return;
        }
        let cost = i64::from(self.pending);
        self.pending = 0;
        self.emit(Instruction::LocalGet(self.s.fuel));
        self.emit(Instruction::I64Const(cost));
        self.emit(Instruction::I64Sub);
        self.emit(Instruction::LocalSet(self.s.fuel));
    }

    /// Makes the fuel global current (before calls and wherever the function may be left).
    fn sync(&mut self) {
        self.emit(Instruction::LocalGet(self.s.fuel));
        self.emit(Instruction::GlobalSet(self.fuel_global));
    }

    /// Loads the counter from the global (at entry and after calls, which spend from it).
    fn reload(&mut self) {
        self.emit(Instruction::GlobalGet(self.fuel_global));
        self.emit(Instruction::LocalSet(self.s.fuel));
    }

    /// The check at function entry and loop headers: trap when fuel is negative or the deadline
    /// (a tick count in the shared clock memory) has passed. Both slow paths end in
    /// `unreachable` and call nothing, so Cranelift keeps them off the hot path and the loop's
    /// registers intact.
    fn check(&mut self) {
        if !self.meter {
            return;
        }
        use Instruction as I;
        let empty = wasm_encoder::BlockType::Empty;
        for i in [I::LocalGet(self.s.fuel), I::I64Const(0), I::I64LtS, I::If(empty)] {
            self.emit(i);
        }
        self.sync();
        self.emit(I::Unreachable);
        self.emit(I::End);
        self.emit(I::I32Const(0));
        self.emit(I::I64AtomicLoad(MemArg { offset: 0, align: 3, memory_index: 0 }));
        self.emit(I::GlobalGet(self.deadline_global));
        self.emit(I::I64GtS);
        self.emit(I::If(empty));
        self.emit(I::I64Const(-1));
        self.emit(I::GlobalSet(self.deadline_global));
        self.sync();
        self.emit(I::Unreachable);
        self.emit(I::End);
    }

    /// Emits `x == x ? x : canonical` for the value on top of the stack.
    fn canonicalise(&mut self, canon: Canon) {
        use Instruction as I;
        let (tmp, constant, eq, select) = match canon {
            Canon::ScalarBefore(F::F32) => {
                (self.s.f32, I::F32Const(Ieee32::new(CANONICAL_F32)), I::F32Eq, I::Select)
            }
            Canon::ScalarBefore(F::F64) => {
                (self.s.f64, I::F64Const(Ieee64::new(CANONICAL_F64)), I::F64Eq, I::Select)
            }
            Canon::VectorAfter(F::F32) => (
                self.s.v128,
                I::V128Const(i128::from_le_bytes(splat(&CANONICAL_F32.to_le_bytes()))),
                I::F32x4Eq,
                I::V128Bitselect,
            ),
            Canon::VectorAfter(F::F64) => (
                self.s.v128,
                I::V128Const(i128::from_le_bytes(splat(&CANONICAL_F64.to_le_bytes()))),
                I::F64x2Eq,
                I::V128Bitselect,
            ),
        };
        for i in [I::LocalTee(tmp), constant, I::LocalGet(tmp), I::LocalGet(tmp), eq, select] {
            self.f.instruction(&i);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum F {
    F32,
    F64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
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

fn splat(lane: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = lane[i % lane.len()];
    }
    out
}

/// Removes the start section (id 8) from an encoded module.
fn strip_start_section(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..8]);
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| e.to_string())?;
        if let Some((id, range)) = payload.as_section() {
            if id == 8 {
                continue;
            }
            // The section header (id + LEB size) precedes the contents.
            out.push(id);
            leb128(&mut out, range.len() as u64);
            out.extend_from_slice(&bytes[range]);
        }
    }
    Ok(out)
}

fn leb128(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Module bytes ready to rewrite: `.wat` text is converted to binary.
pub(crate) fn binary(bytes: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    wat::parse_bytes(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(bytes: &[u8]) -> String {
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

    #[test]
    fn stores_reinterprets_and_copysign_get_canonicalised() {
        let wat = r#"(module (memory 1)
            (func (param f64) (result i64)
              (f64.store (i32.const 0) (local.get 0))
              (drop (f32.copysign (f32.const 1) (f32.const 2)))
              (i64.reinterpret_f64 (local.get 0))))"#;
        let out = rewrite(&binary(wat.as_bytes()).unwrap(), Options { meter: false }).unwrap();
        wasmparser::validate(&out).unwrap();
        let text = ops(&out);
        assert_eq!(text.matches("F64Eq").count(), 2, "store and reinterpret: {text}");
        assert_eq!(text.matches("F32Eq").count(), 1, "copysign: {text}");
    }

    #[test]
    fn metering_checks_loops_and_entries_and_moves_start() {
        let wat = r#"(module (memory 1) (global $g (mut i32) (i32.const 0))
            (func $s (loop $l (br_if $l (i32.const 0))))
            (start $s)
            (func (export "_start") (i32.store (i32.const 0) (i32.load (i32.const 4)))))"#;
        let out = rewrite(&binary(wat.as_bytes()).unwrap(), Options { meter: true }).unwrap();
        let mut features = wasmparser::WasmFeatures::default();
        features.insert(wasmparser::WasmFeatures::THREADS);
        wasmparser::Validator::new_with_features(features).validate_all(&out).unwrap();
        let text = ops(&out);
        // Two function entries and one loop header: three deadline checks.
        assert_eq!(text.matches("I64AtomicLoad").count(), 3, "{text}");
        // Memory accesses moved to memory 1 (memory 0 is the clock).
        assert!(
            text.contains("I32Load { memarg: MemArg { align: 2, max_align: 2, offset: 0, memory: 1 } }"),
            "{text}"
        );
        let mut exports = Vec::new();
        let mut has_start = false;
        for p in Parser::new(0).parse_all(&out) {
            match p.unwrap() {
                Payload::ExportSection(r) => {
                    for e in r {
                        exports.push(e.unwrap().name.to_string());
                    }
                }
                Payload::StartSection { .. } => has_start = true,
                _ => {}
            }
        }
        assert!(!has_start, "the start section is removed");
        assert_eq!(exports, ["_start", FUEL_GLOBAL, DEADLINE_GLOBAL, START_EXPORT]);
    }

    #[test]
    fn modules_without_imports_globals_or_exports_get_the_sections() {
        let out = rewrite(&binary(b"(module (func))").unwrap(), Options { meter: true }).unwrap();
        let mut features = wasmparser::WasmFeatures::default();
        features.insert(wasmparser::WasmFeatures::THREADS);
        wasmparser::Validator::new_with_features(features).validate_all(&out).unwrap();
    }
}
