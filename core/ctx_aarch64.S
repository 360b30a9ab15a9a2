/* ctx_aarch64.S - the task context switch on AArch64 (AAPCS64): the
 * callee-saved general registers x19-x28, the frame pointer x29 and the
 * link register x30, the low halves d8-d15 of v8-v15, and FPCR (rounding
 * mode and the like), then the stack pointer. No syscall, no signal mask. */
#if defined(__aarch64__)
    .text

/* The saved frame: 22 words (176 bytes, keeping sp 16-aligned).
 *   [0..9]  x19..x28   [10] x29   [11] x30   [12..19] d8..d15   [20] fpcr */
#define FRAME 176

/* void rn__ctx_switch(void **from_sp, void *to_sp) */
    .globl rn__ctx_switch
    .hidden rn__ctx_switch
    .type rn__ctx_switch, %function
    .p2align 4
rn__ctx_switch:
    .cfi_startproc
    sub sp, sp, #FRAME
    stp x19, x20, [sp, #0]
    stp x21, x22, [sp, #16]
    stp x23, x24, [sp, #32]
    stp x25, x26, [sp, #48]
    stp x27, x28, [sp, #64]
    stp x29, x30, [sp, #80]
    stp d8, d9, [sp, #96]
    stp d10, d11, [sp, #112]
    stp d12, d13, [sp, #128]
    stp d14, d15, [sp, #144]
    mrs x9, fpcr
    str x9, [sp, #160]
    mov x9, sp
    str x9, [x0]
    mov sp, x1
    ldr x9, [sp, #160]
    msr fpcr, x9
    ldp x19, x20, [sp, #0]
    ldp x21, x22, [sp, #16]
    ldp x23, x24, [sp, #32]
    ldp x25, x26, [sp, #48]
    ldp x27, x28, [sp, #64]
    ldp x29, x30, [sp, #80]
    ldp d8, d9, [sp, #96]
    ldp d10, d11, [sp, #112]
    ldp d12, d13, [sp, #128]
    ldp d14, d15, [sp, #144]
    add sp, sp, #FRAME
    ret
    .cfi_endproc
    .size rn__ctx_switch, .-rn__ctx_switch

/* First entry of a new task: the frame built by the task code "returns"
 * here (its x30) with the task in x19 and its entry function in x20; sp is
 * the 16-aligned top of the task's stack. */
    .globl rn__ctx_entry
    .hidden rn__ctx_entry
    .type rn__ctx_entry, %function
    .p2align 4
rn__ctx_entry:
    .cfi_startproc
    .cfi_undefined x30
    mov x29, #0
    mov x0, x19
    blr x20
    brk #0x3e8
    .cfi_endproc
    .size rn__ctx_entry, .-rn__ctx_entry

/* Branch protection (-mbranch-protection=bti/pac-ret/standard): the linker
 * marks the library BTI or PAC compatible only if every object says it is.
 * Both functions here are: neither is a target of br/blr (rn__ctx_switch is
 * called directly, rn__ctx_entry is reached by ret), and a saved x30 is
 * restored on the very stack it was signed against, so the C callers'
 * paciasp/autiasp pair still matches. */
#if defined(__ARM_FEATURE_BTI_DEFAULT) || defined(__ARM_FEATURE_PAC_DEFAULT)
#if defined(__ARM_FEATURE_BTI_DEFAULT) && __ARM_FEATURE_BTI_DEFAULT
#define RN_FEATURE_BTI 1
#else
#define RN_FEATURE_BTI 0
#endif
#if defined(__ARM_FEATURE_PAC_DEFAULT) && __ARM_FEATURE_PAC_DEFAULT
#define RN_FEATURE_PAC 2
#else
#define RN_FEATURE_PAC 0
#endif
    .pushsection .note.gnu.property, "a"
    .balign 8
    .long 4                       /* name size ("GNU\0") */
    .long 16                      /* descriptor size */
    .long 5                       /* NT_GNU_PROPERTY_TYPE_0 */
    .asciz "GNU"
    .long 0xc0000000              /* GNU_PROPERTY_AARCH64_FEATURE_1_AND */
    .long 4
    .long RN_FEATURE_BTI | RN_FEATURE_PAC
    .long 0
    .popsection
#endif

#endif
    .section .note.GNU-stack,"",%progbits
