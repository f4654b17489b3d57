# One place for compiler warnings, applied to every Cetus target.
function(cetus_set_warnings target)
    target_compile_options(${target} PRIVATE
        $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic>
        $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<BOOL:${CETUS_WERROR}>>:-Werror>)
endfunction()
