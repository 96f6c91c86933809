//! Keeps panics a test injects (messages starting "injected"), which the crate catches
//! as the test checks, out of the test output; any other panic is reported as usual.

/// Installs the filtering panic hook once per test binary.
pub fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let injected = info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|m| m.starts_with("injected"));
            if !injected {
                default(info);
            }
        }));
    });
}
