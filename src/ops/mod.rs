//! Atomic transformer ops. One module per op family; each holds the plain, multi-threaded CPU
//! reference (with shape comments) and the GPU launch of the matching `kernels/*.hip` kernel.
