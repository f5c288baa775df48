//! Building the large state machines straight into the heap memory that keeps them.
//!
//! Core's `Backend` and `Frontend` hold their tables inline (tens of KiB, most of it room that
//! stays unwritten until used), and their constructors are never inlined: given heap memory as
//! their return slot, they write the few fields a fresh state machine has and nothing else.
//! The compiler hands a callee the caller's memory as its return slot only when the call cannot
//! unwind (an unwinding constructor must leave that memory as it was); a Rust function of
//! another crate may, as far as the caller can tell, so `Box::new(value)` and writing into a
//! `Box::new_uninit()` both build the value on the stack and copy all of it. Calling the
//! constructor through an `extern "C"` function, which cannot unwind (a panic inside it aborts
//! the process), lets the memory be handed over. The constructors used here never panic.
//!
//! This module owns only that; what is built is its callers'.

/// `make()`'s value, built in memory allocated before it is made; `make` must not panic (a
/// panic aborts the process).
pub(crate) fn boxed<T>(make: impl FnOnce() -> T) -> Box<T> {
    let mut slot = Box::<T>::new_uninit();
    slot.write(without_unwinding(make));
    // SAFETY: the line above initialized the slot.
    unsafe { slot.assume_init() }
}

/// Calls `make`, returning its value through the caller's return slot. Only Rust calls it: the
/// C ABI is for its guarantee not to unwind, and nothing crosses a language boundary.
#[inline(never)]
#[allow(improper_ctypes_definitions)]
extern "C" fn without_unwinding<T, F: FnOnce() -> T>(make: F) -> T {
    make()
}
