// The strict JSON library: value, reader, writer, UTF-8 repair.
#ifndef UR_JSON_JSON_HPP
#define UR_JSON_JSON_HPP

#include "json/parse.hpp"
#include "json/utf8.hpp"
#include "json/value.hpp"
#include "json/write.hpp"

#endif
