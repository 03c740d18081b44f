# subgate: plain GNU make. `make` builds into build/, `make SANITIZE=1` into
# build-san/ (AddressSanitizer + UBSan), `make check` installs what is
# missing, builds both and runs every test. See README.md.

PKGS := libuv openssl sqlite3 opendkim libcrypt
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lldns -lpthread

CC ?= cc
WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
	-Wmissing-prototypes -Wformat=2 -Wvla -Wpointer-arith -Wcast-qual \
	-Wwrite-strings -Wimplicit-fallthrough
# B= puts a build somewhere else (B=/tmp/mybuild), so that parallel work
# in one tree does not share objects.
ifeq ($(SANITIZE),1)
B ?= build-san
OPT := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=all
LDSAN := -fsanitize=address,undefined
else
B ?= build
OPT := -O2 -g -D_FORTIFY_SOURCE=2
LDSAN :=
endif
CFLAGS := -std=c11 -D_DEFAULT_SOURCE -D_GNU_SOURCE $(OPT) $(WARN) \
	-fstack-protector-strong $(PKG_CFLAGS) $(EXTRA_CFLAGS)
LDFLAGS := $(LDSAN) $(EXTRA_LDFLAGS)

COMMON_SRC := $(wildcard common/*.c)
SERVER_SRC := $(filter-out server/main.c,$(wildcard server/*.c))
SIGNER_SRC := $(filter-out signer/signer_main.c,$(wildcard signer/*.c))
ADMIN_SRC := $(wildcard admin/*.c)
UNIT_SRC := $(wildcard tests/unit/test_*.c)

obj = $(patsubst %.c,$(B)/obj/%.o,$(1))

LIBCOMMON := $(B)/lib/libsubgate.a
LIBSERVER := $(B)/lib/libserver.a
LIBSIGNER := $(B)/lib/libsigner.a
BINS := $(B)/bin/subgated $(B)/bin/subgate-signer $(B)/bin/subgate
UNITS := $(patsubst tests/unit/%.c,$(B)/tests/%,$(UNIT_SRC))

.SECONDARY:
.PHONY: all check unit integration run lint format clean install-deps
all: $(BINS)

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

# The schema is compiled into the programs that may create a database.
$(B)/gen/schema_sql.c: schema/schema.sql
	@mkdir -p $(dir $@)
	{ echo '/* generated from schema/schema.sql */'; \
	  echo 'extern const char db_schema_sql[];'; \
	  echo 'const char db_schema_sql[] ='; \
	  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/    "/' -e 's/$$/\\n"/' $<; \
	  echo ';'; } > $@
$(B)/obj/gen/schema_sql.o: $(B)/gen/schema_sql.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Wno-missing-prototypes -c -o $@ $<

$(LIBCOMMON): $(call obj,$(COMMON_SRC)) $(B)/obj/gen/schema_sql.o
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^
$(LIBSERVER): $(call obj,$(SERVER_SRC))
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^
$(LIBSIGNER): $(call obj,$(SIGNER_SRC))
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(B)/bin/subgated: $(call obj,server/main.c) $(LIBSERVER) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)
$(B)/bin/subgate-signer: $(call obj,signer/signer_main.c) $(LIBSIGNER) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)
$(B)/bin/subgate: $(call obj,$(ADMIN_SRC)) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(B)/tests/%: $(B)/obj/tests/unit/%.o $(LIBSERVER) $(LIBSIGNER) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lcmocka

unit: $(UNITS)
	@set -e; for t in $(UNITS); do echo "== $$t"; $$t; done

install-deps:
	deploy/install-deps

# Unit tests and integration tests run against the sanitized build; the
# release build must compile cleanly too.
check: install-deps
	$(MAKE) all
	$(MAKE) SANITIZE=1 all unit
	SUBGATE_BIN=$(CURDIR)/build-san/bin /usr/bin/python3 -m pytest -q \
		-p no:cacheprovider tests/integration

integration: all
	SUBGATE_BIN=$(CURDIR)/build/bin /usr/bin/python3 -m pytest -q \
		-p no:cacheprovider tests/integration

run: install-deps all
	deploy/run-demo

lint:
	clang-format --dry-run --Werror $(wildcard */*.c */*.h tests/unit/*.c)
	cppcheck --quiet --enable=warning,performance,portability \
		--error-exitcode=1 --inline-suppr -I common $(COMMON_SRC) \
		$(wildcard server/*.c signer/*.c admin/*.c)

format:
	clang-format -i $(wildcard */*.c */*.h tests/unit/*.c)

clean:
	rm -rf build build-san

-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)
