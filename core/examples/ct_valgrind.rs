//! A secret-dependence check of the generator table's constant-time multiplication under
//! valgrind's memcheck (issue 17: "a constant-time check of the comb's table scan").
//!
//! The idea is ctgrind's (Langley, 2010): memcheck tracks, bit by bit, whether a value is
//! defined, and reports a conditional jump or a memory address computed from an undefined
//! one. Declaring a secret scalar *undefined* (a client request: no byte of it changes)
//! turns memcheck into a checker of secret-dependent branches and table indexes: any such
//! use inside `FixedBaseTable::mul` is reported. The result point is declared defined
//! again before anything reads it, so only the multiplication itself is checked.
//!
//! A negative control runs the same scalars through `mul_vartime` (verification's
//! multiplication: it indexes the table by the digit and skips zero digits). Memcheck must
//! report errors there, or the check would prove nothing.
//!
//! Run by `scripts/ct-valgrind.sh` (built with `--release`, the code that ships):
//!
//! ```text
//! valgrind -q target/release/examples/ct_valgrind
//! ```
//!
//! It prints the errors memcheck counted for each case and exits 0 only if the
//! constant-time multiplication had none and the variable-time one had some; 2 when not
//! run under valgrind, or not on x86_64 Linux.
//!
//! Why our own client request instead of a crate: the request is five instructions of
//! inline assembly (valgrind.h's `VALGRIND_DO_CLIENT_REQUEST_EXPR` for amd64), and the
//! crates that wrap it either compile valgrind's C headers (crabgrind) or generate code at
//! build time; a test tool needs neither.
// Inline assembly is unsafe: the client request below, nothing else.
#![allow(unsafe_code)]

use std::hint::black_box;
use std::process::ExitCode;

use openpsd_core::crypto::comb::generator_table;
use openpsd_core::crypto::sha256;
use p256::elliptic_curve::ops::Reduce;
use p256::{FieldBytes, ProjectivePoint, Scalar};

/// valgrind.h: `VG_USERREQ__RUNNING_ON_VALGRIND`.
const RUNNING_ON_VALGRIND: usize = 0x1001;
/// valgrind.h: `VG_USERREQ__COUNT_ERRORS`.
const COUNT_ERRORS: usize = 0x1201;
/// memcheck.h: `VG_USERREQ_TOOL_BASE('M','C') + 1`, `VALGRIND_MAKE_MEM_UNDEFINED`.
const MAKE_MEM_UNDEFINED: usize = 0x4D43_0001;
/// memcheck.h: `VG_USERREQ_TOOL_BASE('M','C') + 2`, `VALGRIND_MAKE_MEM_DEFINED`.
const MAKE_MEM_DEFINED: usize = 0x4D43_0002;

/// Scalars checked per case.
const SCALARS: u64 = 16;

/// A valgrind client request: `request` with two arguments; 0 when not under valgrind.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn client_request(request: usize, a1: usize, a2: usize) -> usize {
    let args: [usize; 6] = [request, a1, a2, 0, 0, 0];
    let mut result: usize = 0;
    // SAFETY: the four rotations of rdi add up to 128 bits (rdi is unchanged) and
    // `xchg rbx, rbx` does nothing: natively the sequence has no effect. Under valgrind
    // it is the magic preamble: valgrind reads the six words at rax (alive for the
    // duration of the asm) and writes its answer to rdx.
    unsafe {
        core::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            in("rax") args.as_ptr(),
            inout("rdx") result,
            options(nostack),
        );
    }
    result
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn client_request(_request: usize, _a1: usize, _a2: usize) -> usize {
    0
}

/// Declares the bytes of `value` undefined (secret) or defined (public) to memcheck.
fn mark<T>(value: &T, request: usize) {
    client_request(request, core::ptr::from_ref(value) as usize, size_of::<T>());
}

/// Memcheck errors while multiplying `SCALARS` secret scalars with `mul`.
fn errors_of(mul: &dyn Fn(&Scalar) -> ProjectivePoint) -> usize {
    let before = client_request(COUNT_ERRORS, 0, 0);
    for i in 0..SCALARS {
        let bytes = sha256(&i.to_le_bytes());
        let k = <Scalar as Reduce<FieldBytes>>::reduce(&bytes.into());
        mark(&k, MAKE_MEM_UNDEFINED);
        let point = mul(black_box(&k));
        // The product is public (it becomes r): only the multiplication is checked.
        mark(&point, MAKE_MEM_DEFINED);
        black_box(point);
    }
    client_request(COUNT_ERRORS, 0, 0).saturating_sub(before)
}

fn main() -> ExitCode {
    if client_request(RUNNING_ON_VALGRIND, 0, 0) == 0 {
        eprintln!(
            "ct_valgrind: not running under valgrind (x86_64 Linux only): \
             valgrind -q target/release/examples/ct_valgrind"
        );
        return ExitCode::from(2);
    }
    // The table is public: built before any secret exists.
    let table = generator_table();
    let constant_time = errors_of(&|k| table.mul(k));
    let variable_time = errors_of(&|k| table.mul_vartime(k));
    println!(
        "memcheck errors over {SCALARS} secret scalars: FixedBaseTable::mul {constant_time} \
         (must be 0), mul_vartime {variable_time} (the control: must be > 0)"
    );
    if constant_time == 0 && variable_time > 0 {
        println!("constant-time check (valgrind): passed");
        ExitCode::SUCCESS
    } else {
        println!("constant-time check (valgrind): FAILED");
        ExitCode::FAILURE
    }
}
