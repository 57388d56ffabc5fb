# add_lesson() and add_mp_test(): one line per program.
#
#   add_lesson(<name> [NO_VERDICT] [TSAN] [TIMEOUT <s>] [LIBS <targets>...]
#              [INTERRUPT <args>...] [MEMCHECK <args>... | NO_MEMCHECK]
#              [CASE <case> <args>...]...)
#
# builds <name>.c of the current folder into build/<folder>/<name>, linked
# with lib/ (mp) and pthreads, and registers the lesson's harness tests
# (tests/lesson_check.c), labelled with the chapter and "lesson":
#   <folder>/<name>:run     a bare run exits 0 and prints "result: ... OK"
#                           (NO_VERDICT: a lesson that checks nothing)
#   <folder>/<name>:help    --help exits 0 and prints usage
#   <folder>/<name>:badopt  an unknown option exits 2 with a message
#   <folder>/<name>:head    its stdout closed after the first line, as by
#                           `| head -1`: exits 141 (or 0), quietly
#   <folder>/<name>:sigint  (with INTERRUPT) run with <args>, interrupted with
#                           SIGINT once it has forked: must clean up and exit 130
#   <folder>/<name>:<case>  (each CASE) a run with awkward <args> (capacity 1,
#                           an empty input, a killed worker...) that must exit
#                           0 with "result: ... OK", like :run
# TSAN: the lesson runs threads worth ThreadSanitizer's look.  In a build
# with -DMP_SANITIZE=thread (the tsan preset) it gets a test
#   <folder>/<name>:tsan   a bare run that must reach its verdict (not
#                          judged: figures mean little under TSan) with no
#                          report from TSan; labelled "tsan"
# and the tsan preset runs those only.  (TSan sees the threads of one
# process; it does not follow fork, reports process-shared mutexes falsely,
# and needs an instrumented OpenMP runtime.)
#   <folder>/<name>:memcheck  (with -DMP_MEMCHECK=ON, the memcheck preset) a
#                           run with the MEMCHECK <args> (default: none) under
#                           valgrind's memcheck, children traced; labelled
#                           "memcheck" instead of "lesson" (NO_MEMCHECK: a
#                           lesson that cannot run there; say why beside it)
# Every one of them also fails if the run leaves a process or a named IPC
# object behind.  A lesson's own tests hold a lock named after it, so they
# never run at the same time, even under ctest -j.
# It also appends <folder>/<name>.c to the global property MP_LESSON_SOURCES,
# the list tests/readme_sync checks both READMEs' tables against.

# mp_split_cases(<rest_var> <cases_var> <args>...): take every
# "CASE <case> <args>..." group out of <args>.  Each group becomes one entry
# of <cases_var>, its words joined by "|"; the other words go to <rest_var>.
function(mp_split_cases rest_var cases_var)
  set(rest "")
  set(cases "")
  set(current "")
  set(in_case FALSE)
  foreach(word IN LISTS ARGN)
    if(word STREQUAL "CASE")
      if(in_case)
        list(APPEND cases "${current}")
      endif()
      set(in_case TRUE)
      set(current "")
    elseif(in_case)
      if(current STREQUAL "")
        set(current "${word}")
      else()
        string(APPEND current "|${word}")
      endif()
    else()
      list(APPEND rest "${word}")
    endif()
  endforeach()
  if(in_case)
    list(APPEND cases "${current}")
  endif()
  set(${rest_var} "${rest}" PARENT_SCOPE)
  set(${cases_var} "${cases}" PARENT_SCOPE)
endfunction()

function(mp_lesson_tests name dir chapter)
  mp_split_cases(args cases ${ARGN})
  cmake_parse_arguments(T "NO_VERDICT;TSAN;NO_MEMCHECK" "TIMEOUT"
                        "INTERRUPT;MEMCHECK" ${args})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  set(verdict --verdict)
  if(T_NO_VERDICT)
    set(verdict "")
  endif()
  set(check $<TARGET_FILE:lesson_check>)
  set(prog $<TARGET_FILE:${name}>)
  add_test(NAME ${dir}/${name}:run
           COMMAND ${check} run ${verdict} --timeout ${T_TIMEOUT} -- ${prog})
  add_test(NAME ${dir}/${name}:help COMMAND ${check} help -- ${prog})
  add_test(NAME ${dir}/${name}:badopt COMMAND ${check} badopt -- ${prog})
  add_test(NAME ${dir}/${name}:head
           COMMAND ${check} head --timeout ${T_TIMEOUT} -- ${prog})
  set(tests ${dir}/${name}:run ${dir}/${name}:help ${dir}/${name}:badopt
            ${dir}/${name}:head)
  if(T_INTERRUPT)
    add_test(NAME ${dir}/${name}:sigint
             COMMAND ${check} sigint --timeout ${T_TIMEOUT} -- ${prog} ${T_INTERRUPT})
    list(APPEND tests ${dir}/${name}:sigint)
  endif()
  foreach(c IN LISTS cases)
    string(REPLACE "|" ";" words "${c}")
    list(POP_FRONT words case)
    if(NOT case OR case MATCHES "^(run|help|badopt|sigint)$")
      message(FATAL_ERROR "add_lesson(${name}): CASE needs a new name, got '${case}'")
    endif()
    add_test(NAME ${dir}/${name}:${case}
             COMMAND ${check} run --verdict --timeout ${T_TIMEOUT} -- ${prog} ${words})
    list(APPEND tests ${dir}/${name}:${case})
  endforeach()
  math(EXPR ctest_timeout "${T_TIMEOUT} + 30")  # the harness times out first
  set_tests_properties(${tests} PROPERTIES
    LABELS "${chapter};lesson" RESOURCE_LOCK ${name}
    TIMEOUT ${ctest_timeout})
  if(T_TSAN AND MP_SANITIZE MATCHES "thread")
    add_test(NAME ${dir}/${name}:tsan
             COMMAND ${check} tsan --timeout ${T_TIMEOUT} -- ${prog})
    set_tests_properties(${dir}/${name}:tsan PROPERTIES
      LABELS "${chapter};tsan" RESOURCE_LOCK ${name}
      TIMEOUT ${ctest_timeout})
  endif()
  if(MP_MEMCHECK AND NOT T_NO_MEMCHECK)
    # 20-50 times slower under valgrind: a longer bound.
    add_test(NAME ${dir}/${name}:memcheck
             COMMAND ${check} memcheck --valgrind ${MP_VALGRIND} --timeout 900
                     --suppressions ${PROJECT_SOURCE_DIR}/tests/valgrind.supp
                     -- ${prog} ${T_MEMCHECK})
    set_tests_properties(${dir}/${name}:memcheck PROPERTIES
      LABELS "${chapter};memcheck" RESOURCE_LOCK ${name} TIMEOUT 930)
  endif()
endfunction()

function(add_lesson name)
  mp_split_cases(args cases ${ARGN})
  cmake_parse_arguments(L "NO_VERDICT;TSAN;NO_MEMCHECK" "TIMEOUT"
                        "LIBS;INTERRUPT;MEMCHECK" ${args})
  file(RELATIVE_PATH dir ${PROJECT_SOURCE_DIR} ${CMAKE_CURRENT_SOURCE_DIR})
  string(REGEX REPLACE "/.*" "" chapter "${dir}")
  # Every lesson's source, relative to the project root, in the order the
  # chapters are added: tests/readme_sync checks the READMEs' tables by it.
  set_property(GLOBAL APPEND PROPERTY MP_LESSON_SOURCES ${dir}/${name}.c)

  add_executable(${name} ${name}.c)
  target_link_libraries(${name} PRIVATE mp Threads::Threads ${L_LIBS})
  # Where the lesson's files live, for a Python twin or a data file beside it.
  target_compile_definitions(${name} PRIVATE
    MP_LESSON_DIR="${CMAKE_CURRENT_SOURCE_DIR}")

  set(pass "")
  if(L_NO_VERDICT)
    set(pass NO_VERDICT)
  endif()
  if(L_TSAN)
    list(APPEND pass TSAN)
  endif()
  if(L_NO_MEMCHECK)
    list(APPEND pass NO_MEMCHECK)
  endif()
  if(L_TIMEOUT)
    list(APPEND pass TIMEOUT ${L_TIMEOUT})
  endif()
  if(L_INTERRUPT)
    list(APPEND pass INTERRUPT ${L_INTERRUPT})
  endif()
  if(L_MEMCHECK)
    list(APPEND pass MEMCHECK ${L_MEMCHECK})
  endif()
  foreach(c IN LISTS cases)
    string(REPLACE "|" ";" words "${c}")
    list(APPEND pass CASE ${words})
  endforeach()
  mp_lesson_tests(${name} ${dir} ${chapter} ${pass})
endfunction()

#   add_mp_test(<name> [LIBS <targets>...])
# builds tests/<name>.c with CMocka and registers it, labelled "tests" and
# "unit", run through the same harness (exit 0, nothing left behind).
function(add_mp_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "LIBS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  add_executable(${name} ${name}.c)
  target_link_libraries(${name} PRIVATE mp PkgConfig::CMOCKA Threads::Threads ${T_LIBS})
  add_test(NAME tests/${name}
           COMMAND $<TARGET_FILE:lesson_check> run --timeout ${T_TIMEOUT} -- $<TARGET_FILE:${name}>)
  math(EXPR ctest_timeout "${T_TIMEOUT} + 30")
  set_tests_properties(tests/${name} PROPERTIES
    LABELS "tests;unit" RESOURCE_LOCK ${name} TIMEOUT ${ctest_timeout})
endfunction()
