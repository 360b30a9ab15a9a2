/* ctx_x86_64.S - the task context switch: callee-saved registers, the SSE
 * control word and the x87 control word, then the stack pointer. No syscall
 * and no signal mask (that is what makes swapcontext slow). System V ABI. */
#if defined(__x86_64__)
    .text

/* void rn__ctx_switch(void **from_sp, void *to_sp) */
    .globl rn__ctx_switch
    .hidden rn__ctx_switch
    .type rn__ctx_switch, @function
rn__ctx_switch:
    .cfi_startproc
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .cfi_endproc
    .size rn__ctx_switch, .-rn__ctx_switch

/* First entry of a new task: the frame built by rn__ctx_init "returns" here
 * with the task in r12 and its entry function in r13; rsp is 16-aligned. */
    .globl rn__ctx_entry
    .hidden rn__ctx_entry
    .type rn__ctx_entry, @function
rn__ctx_entry:
    .cfi_startproc
    .cfi_undefined rip
    xorl %ebp, %ebp
    movq %r12, %rdi
    callq *%r13
    ud2
    .cfi_endproc
    .size rn__ctx_entry, .-rn__ctx_entry

#endif
    .section .note.GNU-stack,"",@progbits
