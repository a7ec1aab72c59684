//! Layer compression (gzip, zstd): not written yet beyond the gzip path in [`super::layer`].
