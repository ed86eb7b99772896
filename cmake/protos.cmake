# gantry_protos(<out-var-sources> <descriptor-set-symbol> <proto dir> <gen dir> <proto files relative to the proto dir>...)
# Generates .pb-c.c/.h for each file with protoc-c, a serialized FileDescriptorSet of all of them
# (with imports) and a C file embedding that set as <symbol>[] / <symbol>_len (cmake/embed.cmake),
# which server reflection serves.
find_program(PROTOC_C protoc-c REQUIRED)
find_program(PROTOC protoc REQUIRED)
set(GANTRY_EMBED_CMAKE ${CMAKE_CURRENT_LIST_DIR}/embed.cmake)

function(gantry_protos out symbol proto_dir gen_dir)
  file(MAKE_DIRECTORY ${gen_dir})
  set(srcs)
  set(abs)
  foreach(p ${ARGN})
    string(REGEX REPLACE "\\.proto$" "" stem ${p})
    list(APPEND srcs ${gen_dir}/${stem}.pb-c.c ${gen_dir}/${stem}.pb-c.h)
    list(APPEND abs ${proto_dir}/${p})
    add_custom_command(
      OUTPUT ${gen_dir}/${stem}.pb-c.c ${gen_dir}/${stem}.pb-c.h
      COMMAND ${PROTOC_C} -I${proto_dir} --c_out=${gen_dir} ${p}
      DEPENDS ${proto_dir}/${p}
      WORKING_DIRECTORY ${proto_dir}
      COMMENT "protoc-c ${p}"
      VERBATIM)
  endforeach()
  add_custom_command(
    OUTPUT ${gen_dir}/${symbol}.pb ${gen_dir}/${symbol}.c
    COMMAND ${PROTOC} -I${proto_dir} --include_imports --descriptor_set_out=${gen_dir}/${symbol}.pb ${ARGN}
    COMMAND ${CMAKE_COMMAND} -DIN=${gen_dir}/${symbol}.pb -DOUT=${gen_dir}/${symbol}.c -DSYMBOL=${symbol}
            -P ${GANTRY_EMBED_CMAKE}
    DEPENDS ${abs} ${GANTRY_EMBED_CMAKE}
    WORKING_DIRECTORY ${proto_dir}
    COMMENT "descriptor set ${symbol}"
    VERBATIM)
  list(APPEND srcs ${gen_dir}/${symbol}.c)
  set(${out} ${srcs} PARENT_SCOPE)
endfunction()
