# Keeps README.md and README.zh-CN.md in step with the tree and each other.
# Run by ctest as tests/readme_sync (tests/CMakeLists.txt):
#
#   cmake -DSOURCE_DIR=<project root> -DLESSONS=<a.c;b.c...>
#         -DREADME_EN=<README.md> -DREADME_ZH=<README.zh-CN.md>
#         -P readme_sync.cmake
#
# LESSONS: every lesson the build has (add_lesson records them), relative to
# SOURCE_DIR.  It fails, naming the README and what is wrong, when
#   - a lesson is missing from a README's tables (a table row is a line
#     "| [name](path/to/lesson.c) | ...", outside code blocks);
#   - a row links a file that does not exist, or a lesson listed twice;
#   - the commands of the first ```sh block of the quick-start sections
#     differ, line by line (comments after " #" and blank lines aside, as
#     they are translated).
# Only CMake is needed: every build has it.

cmake_minimum_required(VERSION 3.25)

foreach(var SOURCE_DIR README_EN README_ZH)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "readme_sync: -D${var}=... is required")
  endif()
endforeach()
# The quick-start heading of each README (a regular expression).
if(NOT DEFINED QUICK_START_EN)
  set(QUICK_START_EN "^## Quick start")
endif()
if(NOT DEFINED QUICK_START_ZH)
  set(QUICK_START_ZH "^## 快速上手")
endif()

# Markdown holds ';', '[', ']' and '\', which CMake lists would split on or
# treat specially: each is stood in for by a control character while the
# text is a list of lines, and put back in every line read.
string(ASCII 1 MP_SEMI)
string(ASCII 2 MP_OPEN)
string(ASCII 3 MP_CLOSE)
string(ASCII 4 MP_BACKSLASH)

function(mp_decode out encoded)
  string(REPLACE "${MP_SEMI}" ";" s "${encoded}")
  string(REPLACE "${MP_OPEN}" "[" s "${s}")
  string(REPLACE "${MP_CLOSE}" "]" s "${s}")
  string(REPLACE "${MP_BACKSLASH}" "\\" s "${s}")
  set(${out} "${s}" PARENT_SCOPE)
endfunction()

function(mp_encode out text)
  string(REPLACE "\\" "${MP_BACKSLASH}" s "${text}")
  string(REPLACE ";" "${MP_SEMI}" s "${s}")
  string(REPLACE "[" "${MP_OPEN}" s "${s}")
  string(REPLACE "]" "${MP_CLOSE}" s "${s}")
  set(${out} "${s}" PARENT_SCOPE)
endfunction()

# mp_problem(<text>...): one more problem, its arguments joined, in the
# caller's list "problems" (encoded).
set(problems "")
function(mp_problem)
  set(text "")
  math(EXPR last "${ARGC} - 1")
  foreach(i RANGE ${last})
    string(APPEND text "${ARGV${i}}")
  endforeach()
  mp_encode(text "${text}")
  list(APPEND problems "${text}")
  set(problems "${problems}" PARENT_SCOPE)
endfunction()

# mp_read_readme(<prefix> <path> <quick start heading regex>) sets
#   <prefix>_ROWS      the files the table rows link, relative to SOURCE_DIR
#   <prefix>_COMMANDS  the quick-start commands, encoded
#   <prefix>_LINES     the line number of each command
#   <prefix>_FOUND     whether the README is there at all
# and adds a problem for every row whose file does not exist.
function(mp_read_readme prefix path quick_re)
  get_filename_component(name "${path}" NAME)
  get_filename_component(dir "${path}" DIRECTORY)
  if(NOT EXISTS "${path}")
    mp_problem("${name}: not found (${path})")
    set(problems "${problems}" PARENT_SCOPE)
    set(${prefix}_FOUND FALSE PARENT_SCOPE)
    return()
  endif()
  file(READ "${path}" text)
  string(REPLACE "\r" "" text "${text}")
  mp_encode(text "${text}")
  string(REPLACE "\n" ";" lines "${text}")

  set(rows "")
  set(commands "")
  set(command_lines "")
  set(n 0)
  set(in_fence FALSE)
  set(in_quick FALSE)
  set(quick_found FALSE)
  set(collecting FALSE)
  set(quick_done FALSE)
  foreach(encoded IN LISTS lines)
    math(EXPR n "${n} + 1")
    mp_decode(line "${encoded}")
    if(line MATCHES "^[ \t]*```")
      if(collecting)
        set(collecting FALSE)
        set(quick_done TRUE)
      elseif(NOT in_fence AND in_quick AND NOT quick_done
             AND line MATCHES "^```sh[ \t]*$")
        set(collecting TRUE)
      endif()
      if(in_fence)
        set(in_fence FALSE)
      else()
        set(in_fence TRUE)
      endif()
      continue()
    endif()
    if(collecting)
      # A command, without its comment (translated) or trailing blanks.
      if(line MATCHES "^[ \t]*(#|$)")
        continue()
      endif()
      string(REGEX REPLACE "[ \t]+#.*$" "" command "${encoded}")
      string(REGEX REPLACE "[ \t]+$" "" command "${command}")
      list(APPEND commands "${command}")
      list(APPEND command_lines ${n})
      continue()
    endif()
    if(in_fence)
      continue()
    endif()
    if(line MATCHES "^## ")
      if(line MATCHES "${quick_re}")
        set(in_quick TRUE)
        set(quick_found TRUE)
      else()
        set(in_quick FALSE)
      endif()
    endif()
    if(line MATCHES "^\\|[ \t]*\\[([^]]*)\\]\\(([^)#]+)[^)]*\\)")
      set(label "${CMAKE_MATCH_1}")
      set(link "${CMAKE_MATCH_2}")
      get_filename_component(abs "${link}" ABSOLUTE BASE_DIR "${dir}")
      file(RELATIVE_PATH rel "${SOURCE_DIR}" "${abs}")
      if(NOT EXISTS "${abs}" OR IS_DIRECTORY "${abs}")
        mp_problem(
          "${name}:${n}: extra row [${label}](${link}): ${rel} does not exist")
      elseif(rel IN_LIST rows)
        mp_problem("${name}:${n}: extra row [${label}](${link}): "
                   "${rel} is already listed")
      endif()
      list(APPEND rows "${rel}")
    endif()
  endforeach()
  if(NOT quick_found)
    mp_problem(
      "${name}: no quick-start section (a heading matching '${quick_re}')")
  elseif(NOT commands)
    mp_problem(
      "${name}: the quick-start section has no commands in a ```sh block")
  endif()
  set(${prefix}_FOUND TRUE PARENT_SCOPE)
  set(${prefix}_ROWS "${rows}" PARENT_SCOPE)
  set(${prefix}_COMMANDS "${commands}" PARENT_SCOPE)
  set(${prefix}_LINES "${command_lines}" PARENT_SCOPE)
  set(problems "${problems}" PARENT_SCOPE)
endfunction()

mp_read_readme(EN "${README_EN}" "${QUICK_START_EN}")
mp_read_readme(ZH "${README_ZH}" "${QUICK_START_ZH}")
get_filename_component(en_name "${README_EN}" NAME)
get_filename_component(zh_name "${README_ZH}" NAME)

# 1. Every lesson of the build, in both READMEs' tables.
list(LENGTH LESSONS lesson_count)
if(lesson_count EQUAL 0)
  mp_problem("no lessons given (-DLESSONS=...): add_lesson records them")
endif()
foreach(prefix EN ZH)
  if(prefix STREQUAL "EN")
    set(name "${en_name}")
  else()
    set(name "${zh_name}")
  endif()
  if(NOT ${prefix}_FOUND)
    continue()
  endif()
  foreach(lesson IN LISTS LESSONS)
    if(NOT lesson IN_LIST ${prefix}_ROWS)
      get_filename_component(stem "${lesson}" NAME_WE)
      mp_problem("${name}: missing row for lesson ${lesson} "
                 "(| [${stem}](${lesson}) | ... |)")
    endif()
  endforeach()
endforeach()

# 2. The same quick-start commands, line by line.
list(LENGTH EN_COMMANDS en_count)
list(LENGTH ZH_COMMANDS zh_count)
set(count ${en_count})
if(zh_count GREATER count)
  set(count ${zh_count})
endif()
if(NOT EN_FOUND OR NOT ZH_FOUND)
  set(count 0)
endif()
set(i 0)
while(i LESS count)
  math(EXPR k "${i} + 1")
  set(en "")
  set(zh "")
  if(i LESS en_count)
    list(GET EN_COMMANDS ${i} en)
    list(GET EN_LINES ${i} en_line)
    mp_decode(en "${en}")
  endif()
  if(i LESS zh_count)
    list(GET ZH_COMMANDS ${i} zh)
    list(GET ZH_LINES ${i} zh_line)
    mp_decode(zh "${zh}")
  endif()
  if(i GREATER_EQUAL zh_count)
    mp_problem("${zh_name}: quick-start command ${k} missing; "
               "${en_name}:${en_line} has: ${en}")
  elseif(i GREATER_EQUAL en_count)
    mp_problem("${en_name}: quick-start command ${k} missing; "
               "${zh_name}:${zh_line} has: ${zh}")
  elseif(NOT en STREQUAL zh)
    mp_problem("quick-start command ${k} differs:\n"
               "    ${en_name}:${en_line}: ${en}\n"
               "    ${zh_name}:${zh_line}: ${zh}")
  endif()
  math(EXPR i "${i} + 1")
endwhile()

if(problems)
  list(LENGTH problems problem_count)
  foreach(p IN LISTS problems)
    mp_decode(p "${p}")
    message(NOTICE "readme_sync: ${p}")
  endforeach()
  message(FATAL_ERROR "readme_sync: ${problem_count} problem(s), listed above")
endif()
message(STATUS "readme_sync: ${lesson_count} lessons in the tables of "
               "${en_name} and ${zh_name}; ${en_count} quick-start commands "
               "alike")
