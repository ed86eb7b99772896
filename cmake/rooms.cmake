# Rooms: each folder of the layout table in docs/architecture.md is one room, with its own
# libraries. Headers are reached by their path from the top of the tree ("store/client.h"), but the
# top of the tree is on no include path. Instead every room's headers are staged (as symbolic
# links) under ${CMAKE_BINARY_DIR}/rooms/<room>/, and that directory is a PUBLIC include directory
# of the room's libraries only. A file can therefore include a header only from its own room or
# from a room whose library its target links: including a room above it fails to compile with
# "No such file", and the link graph (below, per room) is the dependency graph.
# tests/layout/check_rooms.py checks the same graph against the table in docs/architecture.md.

# gantry_room(<room> <target>...): stage <room>/*.h and add the staged directory to each target.
function(gantry_room room)
  string(REPLACE "/" "_" id ${room})
  set(stage ${CMAKE_BINARY_DIR}/rooms/${id})
  file(GLOB hdrs CONFIGURE_DEPENDS RELATIVE ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/${room}/*.h)
  foreach(h ${hdrs})
    get_filename_component(dir ${stage}/${h} DIRECTORY)
    file(MAKE_DIRECTORY ${dir})
    if(NOT IS_SYMLINK ${stage}/${h})
      file(CREATE_LINK ${PROJECT_SOURCE_DIR}/${h} ${stage}/${h} SYMBOLIC)
    endif()
  endforeach()
  foreach(t ${ARGN})
    target_include_directories(${t} PUBLIC ${stage})
  endforeach()
endfunction()
