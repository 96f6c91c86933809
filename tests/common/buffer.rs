//! A shared in-memory writer, for capturing what a `tracing` subscriber writes.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

/// Clones write to the same bytes; hand one to the subscriber (`move || buffer.clone()`)
/// and read the text back with [`Buffer::text`].
#[derive(Clone, Default)]
pub struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
