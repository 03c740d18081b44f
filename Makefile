# subgate: plain GNU make. `make` builds into build/, `make SANITIZE=1` into
# build-san/ (AddressSanitizer + UBSan), `make check` installs what is
# missing, builds both and runs every test. See README.md.

PKGS := libuv openssl sqlite3 opendkim libcrypt ldap
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lldns -lpthread
# gpgme: only the admin tool (password reset) speaks OpenPGP.
GPGME_LIBS := $(shell pkg-config --libs gpgme 2>/dev/null || echo -lgpgme)

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
# The benchmark's load generator and sink (bench/, `make bench`); built
# with everything so that tests/integration/test_bench_tools.py finds them.
BENCH_BINS := $(B)/bin/sgload $(B)/bin/sgsink
UNITS := $(patsubst tests/unit/%.c,$(B)/tests/%,$(UNIT_SRC))

.SECONDARY:
.PHONY: all check unit integration run lint format clean install-deps \
	bench
all: $(BINS) $(BENCH_BINS)

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
$(B)/bin/subgate: $(call obj,$(ADMIN_SRC)) $(LIBSERVER) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(GPGME_LIBS)

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
	$(MAKE) fuzz-smoke
	SUBGATE_BIN=$(CURDIR)/build-san/bin /usr/bin/python3 -m pytest -q \
		-p no:cacheprovider tests/integration

integration: all
	SUBGATE_BIN=$(CURDIR)/build/bin /usr/bin/python3 -m pytest -q \
		-p no:cacheprovider tests/integration

# Fuzzing (docs/security.md): libFuzzer harnesses in fuzz/, built with
# clang into $(B)/fuzz with ASan and UBSan. `make fuzz` runs each for
# FUZZ_SECONDS, `make fuzz-smoke` (part of check) for FUZZ_SMOKE_SECONDS.
# The seeds in fuzz/corpus/NAME are only read; what a run learns goes to
# $(B)/fuzz/corpus/NAME, a crash to $(B)/fuzz/artifacts/.
FUZZ_CC ?= clang-14
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 10
FB := $(B)/fuzz
FUZZERS := $(patsubst fuzz/%.c,%,$(wildcard fuzz/fuzz_*.c))
FUZZ_LIB_SRC := common/addr.c common/cfg.c common/ipc.c common/jail.c \
	common/log.c common/xalloc.c server/smtp_parse.c server/smtp_data.c \
	server/smtp_auth.c server/policy.c server/policy_ident.c
FUZZ_CFLAGS := -std=c11 -D_DEFAULT_SOURCE -D_GNU_SOURCE -O1 -g $(WARN) \
	-fsanitize=fuzzer-no-link,address,undefined \
	-fno-sanitize-recover=all $(PKG_CFLAGS)
.PHONY: fuzz fuzz-build fuzz-smoke
$(FB)/obj/%.o: %.c $(wildcard common/*.h server/*.h fuzz/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<
$(FB)/fuzz_%: $(FB)/obj/fuzz/fuzz_%.o $(patsubst %.c,$(FB)/obj/%.o,$(FUZZ_LIB_SRC))
	$(FUZZ_CC) -fsanitize=fuzzer,address,undefined -o $@ $^
fuzz-build: $(addprefix $(FB)/,$(FUZZERS))
fuzz fuzz-smoke: fuzz-build
	@set -e; secs=$(if $(filter fuzz,$@),$(FUZZ_SECONDS),$(FUZZ_SMOKE_SECONDS)); \
	mkdir -p $(FB)/artifacts; for f in $(FUZZERS); do \
	  mkdir -p $(FB)/corpus/$$f; \
	  if ! $(FB)/$$f -max_total_time=$$secs -timeout=10 -rss_limit_mb=2048 \
	      -print_final_stats=1 -artifact_prefix=$(FB)/artifacts/$$f- \
	      $(FB)/corpus/$$f fuzz/corpus/$$f >$(FB)/$$f.log 2>&1; then \
	    tail -n 40 $(FB)/$$f.log; echo "== $$f: FAILED (log $(FB)/$$f.log)"; \
	    exit 1; fi; \
	  echo "== $$f: $$(grep -o 'stat::number_of_executed_units: [0-9]*' \
	    $(FB)/$$f.log | grep -o '[0-9]*$$') runs in $$secs s, no crash"; \
	done

run: install-deps all
	deploy/run-demo

# The benchmark (docs/performance.md): runs bench/run with its load
# generator and sink against this build; options go in BENCH_ARGS
# (bench/run --help). Speed is measured here, never in check.
$(B)/bin/sg%: $(B)/obj/bench/sg%.o
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -lssl -lcrypto -lpthread -lm
bench: install-deps
	$(MAKE) all
	/usr/bin/python3 bench/run --bin $(B)/bin $(BENCH_ARGS)

lint:
	clang-format --dry-run --Werror $(wildcard */*.c */*.h tests/unit/*.c)
	cppcheck --quiet --enable=warning,performance,portability \
		--error-exitcode=1 --inline-suppr -I common $(COMMON_SRC) \
		$(wildcard server/*.c signer/*.c admin/*.c)

format:
	clang-format -i $(wildcard */*.c */*.h tests/unit/*.c)

# ---- install, man pages, Debian package (docs/install.md) ----------------
# `make install` puts the programs, man pages, systemd units and documents
# under DESTDIR + PREFIX, and the example configuration as
# $(CONFDIR)/subgate.conf unless that file exists. subgated starts
# subgate-signer from its own directory, so by default the signer goes
# beside it (LIBEXECDIR = SBINDIR); another LIBEXECDIR is written into the
# installed configuration as signer_program.
PREFIX ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
LIBEXECDIR ?= $(SBINDIR)
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/subgate
UNITDIR ?= $(PREFIX)/lib/systemd/system
CONFDIR ?= /etc/subgate
MANPAGES := $(B)/man/subgated.8 $(B)/man/subgate.8 $(B)/man/subgate.conf.5
SYSTEMD_UNITS := deploy/subgated.service deploy/subgate-rotate.service \
	deploy/subgate-rotate.timer
.PHONY: man install deb

# Man pages: subgated(8) as written; subgate(8) with the command list of
# `subgate help` and subgate.conf(5) with the key reference of cfg.c's
# table filled in by man/mkman, so that neither can drift.
man: $(MANPAGES)
$(B)/gen/cfgdoc: $(call obj,man/cfgdoc.c) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)
$(B)/man/subgated.8: man/subgated.8
	@mkdir -p $(dir $@)
	cp $< $@
$(B)/man/subgate.8: man/subgate.8.in man/mkman $(B)/bin/subgate
	@mkdir -p $(dir $@)
	$(B)/bin/subgate help > $@.help
	man/mkman $< /dev/null $@.help > $@.tmp
	rm -f $@.help && mv $@.tmp $@
$(B)/man/subgate.conf.5: man/subgate.conf.5.in man/mkman $(B)/gen/cfgdoc
	@mkdir -p $(dir $@)
	$(B)/gen/cfgdoc > $@.keys
	man/mkman $< $@.keys /dev/null > $@.tmp
	rm -f $@.keys && mv $@.tmp $@

install: all man
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(LIBEXECDIR) \
		$(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(DOCDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(CONFDIR)
	install -m 0755 $(B)/bin/subgated $(B)/bin/subgate $(DESTDIR)$(SBINDIR)/
	install -m 0755 $(B)/bin/subgate-signer $(DESTDIR)$(LIBEXECDIR)/
	install -m 0644 $(B)/man/subgated.8 $(B)/man/subgate.8 \
		$(DESTDIR)$(MANDIR)/man8/
	install -m 0644 $(B)/man/subgate.conf.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 README.md $(wildcard docs/*.md) \
		deploy/subgate.conf.example $(DESTDIR)$(DOCDIR)/
	for u in $(SYSTEMD_UNITS); do \
		sed -e 's|/usr/sbin/|$(SBINDIR)/|g' \
		    -e 's|/etc/subgate/|$(CONFDIR)/|g' $$u \
		    > $(DESTDIR)$(UNITDIR)/$${u##*/} && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$${u##*/} || exit 1; \
	done
	if [ ! -e $(DESTDIR)$(CONFDIR)/subgate.conf ]; then \
		if [ "$(LIBEXECDIR)" != "$(SBINDIR)" ]; then \
			sed 's|^#signer_program =.*|signer_program = $(LIBEXECDIR)/subgate-signer|' \
			    deploy/subgate.conf.example; \
		else \
			cat deploy/subgate.conf.example; \
		fi > $(DESTDIR)$(CONFDIR)/subgate.conf && \
		chmod 0644 $(DESTDIR)$(CONFDIR)/subgate.conf; \
	fi

# The Debian package, from this tree: dpkg-buildpackage writes it into the
# parent directory, from where it is moved to $(B)/deb/. debian/rules
# builds under debian/build and cleans only what the package build made.
deb:
	dpkg-buildpackage -us -uc -b
	mkdir -p $(B)/deb
	v=$$(dpkg-parsechangelog -S Version); \
	for f in ../subgate_$${v}_* ../subgate-dbgsym_$${v}_*; do \
		[ ! -e "$$f" ] || mv "$$f" $(B)/deb/; \
	done
	ls -l $(B)/deb

clean:
	rm -rf build build-san

-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)
