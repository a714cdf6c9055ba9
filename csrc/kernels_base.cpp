// The kernels for any x86-64 / ARM64 CPU (the compiler's baseline instruction set).
#include "api.h"

// 64-byte vectors passed between static inline helpers: no ABI is involved
#pragma GCC diagnostic ignored "-Wpsabi"

#define FD_VBYTES 16
#define FD_ISA base
#include "kernels.h"
