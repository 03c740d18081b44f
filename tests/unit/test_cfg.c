/* Unit tests for common/cfg: every value type with good and bad values,
 * units, bounds and one past them, file errors with file:line, derived
 * paths, the retry_min/retry_max rule, printing that reads back, and the
 * documentation. Files are written under a mkdtemp() directory that is
 * removed at the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <unistd.h>

#include "../../common/cfg.h"

struct fixture {
    char dir[64];
    char path[96];
};

/* Writes len octets of text to the fixture's file. */
static void write_file(const struct fixture *fx, const char *text, size_t len)
{
    FILE *f = fopen(fx->path, "w");

    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* cfg_print() output in a new string. */
static char *print_to_string(const struct cfg *c)
{
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);

    assert_non_null(f);
    cfg_print(c, f);
    assert_int_equal(fclose(f), 0);
    return s;
}

/* 1 if line (len octets) appears as a whole line in text. */
static int has_line(const char *text, const char *line, size_t len)
{
    const char *p = text;

    for (;;) {
        size_t n = strcspn(p, "\n");
        if (n == len && memcmp(p, line, len) == 0)
            return 1;
        if (p[n] == '\0')
            return 0;
        p += n + 1;
    }
}

/* A file's text and the outcome: for rc 0, lines that cfg_print() must
 * show ("\n"-separated); for rc -1, the error after the file name. */
struct file_case {
    const char *name;
    const char *text;
    int rc;
    const char *want;
};

static const struct file_case file_cases[] = {
    /* file structure */
    {"empty file", "", 0, "max_recipients = 100\nrelay_tls = may"},
    {"comments and blanks", "# c\n\n   # indented\n\t\nmax_recipients = 200\n",
     0, "max_recipients = 200"},
    {"no spaces", "max_recipients=300", 0, "max_recipients = 300"},
    {"crlf lines", "max_recipients = 200\r\nnode_name = n1\r\n", 0,
     "max_recipients = 200\nnode_name = n1"},
    {"no final newline", "node_name = n2", 0, "node_name = n2"},
    {"hash in value", "user = a#b", 0, "user = a#b"},
    {"unknown key", "# c\n\nfoo = 1\n", -1, ":3: unknown key 'foo'"},
    {"unknown key spaced", "max recipients = 1", -1,
     ":1: unknown key 'max recipients'"},
    {"unit suffixed key", "auth_fail_delay_ms = 1s", -1,
     ":1: unknown key 'auth_fail_delay_ms'"},
    {"duplicate", "max_recipients = 200\n\nmax_recipients = 300\n", -1,
     ":3: duplicate key 'max_recipients' (first set on line 1)"},
    {"no equals", "\nmax_recipients 200\n", -1, ":2: expected 'key = value'"},
    {"no key", "= 5", -1, ":1: missing key before '='"},
    {"trailing comment", "max_recipients = 200 # two hundred", -1,
     ":1: bad value for max_recipients: '200 # two hundred' (expected a "
     "decimal number)"},
    {"control char",
     "node_name = a\x01"
     "b",
     -1, ":1: bad value for node_name: 'a\\x01b' (control character)"},
    /* string */
    {"node_name", "node_name = gw-1", 0, "node_name = gw-1"},
    {"node_name underscore", "node_name = gw_1", -1,
     ":1: bad value for node_name: 'gw_1' (letters, digits and '-' only, "
     "not first or last)"},
    {"node_name empty", "node_name =", -1,
     ":1: bad value for node_name: '' (must not be empty)"},
    {"node_name 63",
     "node_name = "
     "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabc",
     0,
     "node_name = "
     "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabc"},
    {"node_name 64",
     "node_name = "
     "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcd",
     -1, ":1: node_name is longer than 63 octets"},
    {"hostname", "hostname = mail.example.org", 0,
     "hostname = mail.example.org"},
    {"hostname double dot", "hostname = mail..example.org", -1,
     ":1: bad value for hostname: 'mail..example.org' (not a host name)"},
    {"hostname numeric", "hostname = 192.0.2.1", -1,
     ":1: bad value for hostname: '192.0.2.1' (not a host name)"},
    {"user", "user = subgate\nsigner_user = subgate-signer", 0,
     "user = subgate\nsigner_user = subgate-signer"},
    {"user space", "user = sub gate", -1,
     ":1: bad value for user: 'sub gate' (not a user name)"},
    {"selector", "selector_template = s%Y-%n", 0, "selector_template = s%Y-%n"},
    {"selector percent", "selector_template = %Y%%", -1,
     ":1: bad value for selector_template: '%Y%%' (only %Y, %m, %d, %n "
     "and %a may follow '%')"},
    {"selector escape", "selector_template = %x", -1,
     ":1: bad value for selector_template: '%x' (only %Y, %m, %d, %n and "
     "%a may follow '%')"},
    {"selector trailing percent", "selector_template = a%", -1,
     ":1: bad value for selector_template: 'a%' (only %Y, %m, %d, %n and "
     "%a may follow '%')"},
    {"selector dot", "selector_template = a.b", -1,
     ":1: bad value for selector_template: 'a.b' (letters, digits, '-' and "
     "%-escapes only)"},
    {"selector empty", "selector_template = \"\"", -1,
     ":1: bad value for selector_template: '' (must not be empty)"},
    /* path and derived paths */
    {"state_dir derives", "state_dir = /srv/sg", 0,
     "state_dir = /srv/sg\ndatabase = /srv/sg/subgate.db\n"
     "queue_dir = /srv/sg/queue\nkey_dir = /srv/sg/keys\n"
     "run_dir = /srv/sg/run"},
    {"state_dir slash", "state_dir = /srv/sg/", 0,
     "database = /srv/sg/subgate.db"},
    {"state_dir root", "state_dir = /", 0, "key_dir = /keys"},
    {"derived override", "queue_dir = /q\nstate_dir = /srv/sg\n", 0,
     "queue_dir = /q\ndatabase = /srv/sg/subgate.db\nrun_dir = /srv/sg/run"},
    {"state_dir empty", "state_dir = \"\"", -1,
     ":1: bad value for state_dir: '' (must not be empty)"},
    {"database empty", "database =", -1,
     ":1: bad value for database: '' (must not be empty)"},
    {"tls files", "tls_cert = /etc/c.pem\ntls_key = /etc/k.pem", 0,
     "tls_cert = /etc/c.pem\ntls_key = /etc/k.pem"},
    {"empty quoted", "relay_ca_file = \"\"", 0, "relay_ca_file = \"\""},
    {"empty bare", "signer_program =", 0, "signer_program = \"\""},
    {"signer_program", "signer_program = /usr/lib/subgate/subgate-signer", 0,
     "signer_program = /usr/lib/subgate/subgate-signer"},
    /* chroot: what the SMTP worker opens must lie inside */
    {"chroot",
     "user = sg\nstate_dir = /srv/sg\nchroot = /srv/sg\n"
     "tls_cert = /srv/sg/tls/c.pem\ntls_key = /srv/sg/tls/k.pem\n",
     0, "chroot = /srv/sg\nrun_dir = /srv/sg/run"},
    {"chroot slashes", "user = sg\nstate_dir = /srv/sg\nchroot = //srv//sg/", 0,
     "chroot = //srv//sg/"},
    {"chroot is state_dir parent",
     "user = sg\nstate_dir = /srv/sg/state\nchroot = /srv", 0, "chroot = /srv"},
    {"chroot off", "chroot = \"\"\ntls_key = /etc/k.pem", 0, "chroot = \"\""},
    {"chroot without user", "state_dir = /srv/sg\nchroot = /srv/sg", -1,
     ":2: chroot needs user: a process that stays root can leave a chroot"},
    {"chroot relative", "chroot = srv/sg", -1,
     ":1: bad value for chroot: 'srv/sg' (is not an absolute path)"},
    {"chroot root", "chroot = /", -1,
     ":1: bad value for chroot: '/' (is the root of the file system)"},
    {"chroot dot dot", "chroot = /srv/../etc", -1,
     ":1: bad value for chroot: '/srv/../etc' (has a '.' or '..' "
     "component)"},
    {"chroot default state_dir", "user = sg\nchroot = /srv/sg", -1,
     ":2: database /var/lib/subgate/subgate.db is outside the chroot "
     "directory (chroot = /srv/sg): the SMTP worker opens it from inside "
     "the chroot"},
    {"chroot state_dir later", "user = sg\nchroot = /srv/sg\n\nstate_dir = /x",
     -1,
     ":4: database /x/subgate.db is outside the chroot directory (chroot = "
     "/srv/sg): the SMTP worker opens it from inside the chroot"},
    {"chroot name prefix", "chroot = /srv/sg\nuser = sg\nstate_dir = /srv/sg2",
     -1,
     ":3: database /srv/sg2/subgate.db is outside the chroot directory "
     "(chroot = /srv/sg): the SMTP worker opens it from inside the chroot"},
    {"chroot queue_dir",
     "chroot = /srv/sg\nuser = sg\nstate_dir = /srv/sg\n"
     "queue_dir = /srv/sg/../q",
     -1,
     ":4: queue_dir /srv/sg/../q has a '.' or '..' component (chroot = "
     "/srv/sg): the SMTP worker opens it from inside the chroot"},
    {"chroot run_dir",
     "user = sg\nstate_dir = /srv/sg\nrun_dir = /run/sg\nchroot = /srv/sg", -1,
     ":4: run_dir /run/sg is outside the chroot directory (chroot = "
     "/srv/sg): the SMTP worker opens it from inside the chroot"},
    {"chroot tls_cert relative",
     "chroot = /srv/sg\nuser = sg\nstate_dir = /srv/sg\ntls_cert = c.pem", -1,
     ":4: tls_cert c.pem is not an absolute path (chroot = /srv/sg): the "
     "SMTP worker opens it from inside the chroot"},
    {"chroot tls_key",
     "chroot = /srv/sg\nuser = sg\nstate_dir = /srv/sg\n\n"
     "tls_cert = /srv/sg/c.pem\ntls_key = /etc/ssl/k.pem",
     -1,
     ":6: tls_key /etc/ssl/k.pem is outside the chroot directory (chroot = "
     "/srv/sg): the SMTP worker opens it from inside the chroot"},
    /* listen list */
    {"listen one", "submission_listen = 127.0.0.1:2525", 0,
     "submission_listen = 127.0.0.1:2525"},
    {"listen comma", "submission_listen = 127.0.0.1:2525, [::1]:2525", 0,
     "submission_listen = 127.0.0.1:2525 [::1]:2525"},
    {"listen name", "submissions_listen = localhost:465", 0,
     "submissions_listen = localhost:465"},
    {"listen empty", "submissions_listen =", 0, "submissions_listen = \"\""},
    {"listen port max", "submission_listen = [::]:65535", 0,
     "submission_listen = [::]:65535"},
    {"listen no port", "submission_listen = 127.0.0.1", -1,
     ":1: bad value for submission_listen: '127.0.0.1' (missing :port)"},
    {"listen v6 no port", "submission_listen = [::1]", -1,
     ":1: bad value for submission_listen: '[::1]' (missing :port)"},
    {"listen v6 bare", "submission_listen = ::1:25", -1,
     ":1: bad value for submission_listen: '::1:25' (an IPv6 address must "
     "be in brackets)"},
    {"listen port 0", "submission_listen = 127.0.0.1:0", -1,
     ":1: bad value for submission_listen: '127.0.0.1:0' (port must be a "
     "number from 1 to 65535)"},
    {"listen port over", "submission_listen = 0.0.0.0:587 127.0.0.1:65536", -1,
     ":1: bad value for submission_listen: '0.0.0.0:587 127.0.0.1:65536' "
     "(port must be a number from 1 to 65535)"},
    {"listen v4 brackets", "submission_listen = [127.0.0.1]:25", -1,
     ":1: bad value for submission_listen: '[127.0.0.1]:25' (brackets must "
     "hold an IPv6 address)"},
    {"listen open bracket", "submission_listen = [::1:25", -1,
     ":1: bad value for submission_listen: '[::1:25' (missing ']')"},
    {"listen bad host", "submission_listen = 1.2.3.999:25", -1,
     ":1: bad value for submission_listen: '1.2.3.999:25' (bad host name "
     "or address)"},
    {"listen no host", "submission_listen = :25", -1,
     ":1: bad value for submission_listen: ':25' (bad host name or "
     "address)"},
    /* relay_host */
    {"relay name", "relay_host = smtp.example.org", 0,
     "relay_host = smtp.example.org"},
    {"relay name port", "relay_host = smtp.example.org:587", 0,
     "relay_host = smtp.example.org:587"},
    {"relay brackets", "relay_host = [smtp.example.org]:587", 0,
     "relay_host = [smtp.example.org]:587"},
    {"relay v4", "relay_host = [192.0.2.1]", 0, "relay_host = [192.0.2.1]"},
    {"relay v6", "relay_host = [2001:db8::1]:25", 0,
     "relay_host = [2001:db8::1]:25"},
    {"relay v6 bare", "relay_host = 2001:db8::1", -1,
     ":1: bad value for relay_host: '2001:db8::1' (an IPv6 address must be "
     "in brackets)"},
    {"relay bad port", "relay_host = smtp.example.org:smtp", -1,
     ":1: bad value for relay_host: 'smtp.example.org:smtp' (port must be a "
     "number from 1 to 65535)"},
    {"relay text after", "relay_host = [192.0.2.1]x", -1,
     ":1: bad value for relay_host: '[192.0.2.1]x' (expected :port after "
     "']')"},
    /* enum */
    {"relay_tls none", "relay_tls = none", 0, "relay_tls = none"},
    {"relay_tls encrypt", "relay_tls = encrypt", 0, "relay_tls = encrypt"},
    {"relay_tls verify", "relay_tls = verify", 0, "relay_tls = verify"},
    {"relay_tls case", "relay_tls = VERIFY", -1,
     ":1: bad value for relay_tls: 'VERIFY' (expected none, may, encrypt or "
     "verify)"},
    {"relay_tls bad", "relay_tls = tls", -1,
     ":1: bad value for relay_tls: 'tls' (expected none, may, encrypt or "
     "verify)"},
    /* bool */
    {"bool yes", "log_syslog = yes", 0, "log_syslog = yes"},
    {"bool true", "log_syslog = true", 0, "log_syslog = yes"},
    {"bool on", "log_syslog = on", 0, "log_syslog = yes"},
    {"bool 1", "log_syslog = 1", 0, "log_syslog = yes"},
    {"bool YES", "log_syslog = YES", 0, "log_syslog = yes"},
    {"bool no", "log_syslog = no", 0, "log_syslog = no"},
    {"bool false", "log_syslog = false", 0, "log_syslog = no"},
    {"bool off", "log_syslog = off", 0, "log_syslog = no"},
    {"bool 0", "log_syslog = 0", 0, "log_syslog = no"},
    {"bool 2", "log_syslog = 2", -1,
     ":1: bad value for log_syslog: '2' (expected yes or no)"},
    {"bool empty", "log_syslog =", -1,
     ":1: bad value for log_syslog: '' (expected yes or no)"},
    /* size */
    {"size M", "max_message_size = 10M", 0, "max_message_size = 10M"},
    {"size min", "max_message_size = 64K", 0, "max_message_size = 64K"},
    {"size max", "max_message_size = 1G", 0, "max_message_size = 1G"},
    {"size octets", "max_message_size = 26214400", 0, "max_message_size = 25M"},
    {"size lower", "max_message_size = 2048k", 0, "max_message_size = 2M"},
    {"size odd", "max_message_size = 65537", 0, "max_message_size = 65537"},
    {"size below", "max_message_size = 65535", -1,
     ":1: max_message_size must be between 64K and 1G"},
    {"size above", "max_message_size = 1073741825", -1,
     ":1: max_message_size must be between 64K and 1G"},
    {"size 1025M", "max_message_size = 1025M", -1,
     ":1: max_message_size must be between 64K and 1G"},
    {"size space", "max_message_size = 25 M", -1,
     ":1: bad value for max_message_size: '25 M' (expected a number of "
     "octets, optionally with K, M or G)"},
    {"size MB", "max_message_size = 25MB", -1,
     ":1: bad value for max_message_size: '25MB' (expected a number of "
     "octets, optionally with K, M or G)"},
    {"size fraction", "max_message_size = 2.5M", -1,
     ":1: bad value for max_message_size: '2.5M' (expected a number of "
     "octets, optionally with K, M or G)"},
    {"size negative", "max_message_size = -1", -1,
     ":1: bad value for max_message_size: '-1' (expected a number of "
     "octets, optionally with K, M or G)"},
    {"size overflow", "max_message_size = 99999999999999999999999", -1,
     ":1: bad value for max_message_size: '99999999999999999999999' "
     "(expected a number of octets, optionally with K, M or G)"},
    /* uint */
    {"recipients min", "max_recipients = 100", 0, "max_recipients = 100"},
    {"recipients max", "max_recipients = 10000", 0, "max_recipients = 10000"},
    {"recipients below", "max_recipients = 99", -1,
     ":1: max_recipients must be between 100 and 10000"},
    {"recipients above", "max_recipients = 10001", -1,
     ":1: max_recipients must be between 100 and 10000"},
    {"recipients word", "max_recipients = abc", -1,
     ":1: bad value for max_recipients: 'abc' (expected a decimal number)"},
    {"recipients plus", "max_recipients = +200", -1,
     ":1: bad value for max_recipients: '+200' (expected a decimal number)"},
    {"recipients unit", "max_recipients = 1K", -1,
     ":1: bad value for max_recipients: '1K' (expected a decimal number)"},
    {"recipients overflow", "max_recipients = 18446744073709551616", -1,
     ":1: bad value for max_recipients: '18446744073709551616' (expected a "
     "decimal number)"},
    {"recipients huge", "max_recipients = 4294967396", -1,
     ":1: max_recipients must be between 100 and 10000"},
    {"sessions min", "max_sessions = 1", 0, "max_sessions = 1"},
    {"sessions max", "max_sessions = 100000", 0, "max_sessions = 100000"},
    {"sessions below", "max_sessions = 0", -1,
     ":1: max_sessions must be between 1 and 100000"},
    {"sessions above", "max_sessions = 100001", -1,
     ":1: max_sessions must be between 1 and 100000"},
    /* duration, stored in milliseconds */
    {"delay zero", "auth_fail_delay = 0s", 0, "auth_fail_delay = 0s"},
    {"delay ms", "auth_fail_delay = 1500ms", 0, "auth_fail_delay = 1500ms"},
    {"delay ms exact", "auth_fail_delay = 2000ms", 0, "auth_fail_delay = 2s"},
    {"delay max", "auth_fail_delay = 30s", 0, "auth_fail_delay = 30s"},
    {"delay above", "auth_fail_delay = 30001ms", -1,
     ":1: auth_fail_delay must be between 0s and 30s"},
    {"delay minute", "auth_fail_delay = 1m", -1,
     ":1: auth_fail_delay must be between 0s and 30s"},
    {"delay bare", "auth_fail_delay = 0", -1,
     ":1: bad value for auth_fail_delay: '0' (expected a number with a "
     "unit: ms, s, m, h or d)"},
    {"timeout bare", "smtp_timeout = 300", -1,
     ":1: bad value for smtp_timeout: '300' (expected a number with a unit: "
     "ms, s, m, h or d)"},
    {"timeout space", "smtp_timeout = 5 m", -1,
     ":1: bad value for smtp_timeout: '5 m' (expected a number with a unit: "
     "ms, s, m, h or d)"},
    {"timeout upper", "smtp_timeout = 5M", -1,
     ":1: bad value for smtp_timeout: '5M' (expected a number with a unit: "
     "ms, s, m, h or d)"},
    {"timeout week", "smtp_timeout = 1w", -1,
     ":1: bad value for smtp_timeout: '1w' (expected a number with a unit: "
     "ms, s, m, h or d)"},
    {"timeout min", "smtp_timeout = 10s", 0, "smtp_timeout = 10s"},
    {"timeout below", "smtp_timeout = 9999ms", -1,
     ":1: smtp_timeout must be between 10s and 1h"},
    {"timeout max", "smtp_timeout = 60m", 0, "smtp_timeout = 1h"},
    {"timeout above", "smtp_timeout = 3601s", -1,
     ":1: smtp_timeout must be between 10s and 1h"},
    {"signer min", "signer_timeout = 1s", 0, "signer_timeout = 1s"},
    {"signer below", "signer_timeout = 999ms", -1,
     ":1: signer_timeout must be between 1s and 5m"},
    {"signer max", "signer_timeout = 300s", 0, "signer_timeout = 5m"},
    {"signer above", "signer_timeout = 301s", -1,
     ":1: signer_timeout must be between 1s and 5m"},
    {"relay_timeout min", "relay_timeout = 1000ms", 0, "relay_timeout = 1s"},
    {"relay_timeout below", "relay_timeout = 0s", -1,
     ":1: relay_timeout must be between 1s and 1h"},
    {"relay_timeout max", "relay_timeout = 1h", 0, "relay_timeout = 1h"},
    {"relay_timeout above", "relay_timeout = 61m", -1,
     ":1: relay_timeout must be between 1s and 1h"},
    /* duration, stored in seconds */
    {"retry_min min", "retry_min = 1s", 0, "retry_min = 1s"},
    {"retry_min below", "retry_min = 0s", -1,
     ":1: retry_min must be between 1s and 1d"},
    {"retry_min max", "retry_min = 1d\nretry_max = 1d", 0,
     "retry_min = 1d\nretry_max = 1d"},
    {"retry_min above", "retry_min = 86401s", -1,
     ":1: retry_min must be between 1s and 1d"},
    {"retry_min fraction", "retry_min = 1500ms", -1,
     ":1: bad value for retry_min: '1500ms' (must be whole seconds)"},
    {"retry_min whole ms", "retry_min = 60000ms", 0, "retry_min = 1m"},
    {"retry_max max", "retry_max = 7d", 0, "retry_max = 7d"},
    {"retry_max above", "retry_max = 169h", -1,
     ":1: retry_max must be between 1s and 7d"},
    {"retry_max below", "retry_max = 0s", -1,
     ":1: retry_max must be between 1s and 7d"},
    {"retry order", "retry_min = 2h\n# x\nretry_max = 1h\n", -1,
     ":3: retry_max (1h) must not be less than retry_min (2h)"},
    {"retry order reversed", "retry_max = 1h\nretry_min = 2h\n", -1,
     ":2: retry_max (1h) must not be less than retry_min (2h)"},
    {"retry max below default min", "retry_max = 1m", -1,
     ":1: retry_max (1m) must not be less than retry_min (5m)"},
    {"retry min above default max", "\nretry_min = 90m", -1,
     ":2: retry_max (1h) must not be less than retry_min (90m)"},
    {"retry equal", "retry_min = 1h\nretry_max = 3600s", 0,
     "retry_min = 1h\nretry_max = 1h"},
    {"publish lead below ttl", "dkim_ttl = 2h\npublish_lead = 1h\n", -1,
     ":2: publish_lead (1h) must not be less than dkim_ttl (2h)"},
    {"publish lead equal ttl", "dkim_ttl = 2s\npublish_lead = 2s\n", 0,
     "publish_lead = 2s\ndkim_ttl = 2s"},
    {"reveal off", "reveal_after = 0s", 0, "reveal_after = 0s"},
    {"dns resolver", "dns_resolver = [::1]:5353", 0,
     "dns_resolver = [::1]:5353"},
    {"dns resolver bad", "dns_resolver = 1.2.3.4:x", -1,
     ":1: bad value for dns_resolver: '1.2.3.4:x' (port must be a number "
     "from 1 to 65535)"},
    {"relay auth",
     "relay_host = mx.example.net\nrelay_auth_user = u\n"
     "relay_auth_password_file = /etc/pw\n",
     0, "relay_auth_user = u"},
    {"relay auth without tls",
     "relay_host = mx.example.net\nrelay_tls = none\n"
     "relay_auth_user = u\nrelay_auth_password_file = /etc/pw\n",
     -1,
     ":3: relay_auth_user needs relay_host, relay_auth_password_file and a "
     "relay_tls other than none"},
    {"relay auth without file",
     "relay_host = mx.example.net\nrelay_auth_user = u\n", -1,
     ":2: relay_auth_user needs relay_host, relay_auth_password_file and a "
     "relay_tls other than none"},
    {"relay auth for mx",
     "relay_auth_user = u\nrelay_auth_password_file = /etc/pw\n", -1,
     ":1: relay_auth_user needs relay_host, relay_auth_password_file and a "
     "relay_tls other than none"},
    {"relay port", "relay_port = 2525", 0, "relay_port = 2525"},
    {"relay port 0", "relay_port = 0", -1,
     ":1: relay_port must be between 1 and 65535"},
    {"concurrency 0", "relay_concurrency = 0", -1,
     ":1: relay_concurrency must be between 1 and 100"},
    {"delay warning", "delay_warning = 4h", 0, "delay_warning = 4h"},
    {"lifetime min", "max_queue_lifetime = 1m", 0, "max_queue_lifetime = 1m"},
    {"lifetime below", "max_queue_lifetime = 59s", -1,
     ":1: max_queue_lifetime must be between 1m and 30d"},
    {"lifetime max", "max_queue_lifetime = 720h", 0,
     "max_queue_lifetime = 30d"},
    {"lifetime above", "max_queue_lifetime = 31d", -1,
     ":1: max_queue_lifetime must be between 1m and 30d"},
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));

    if (fx == NULL)
        return -1;
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/test_cfg.XXXXXX");
    if (mkdtemp(fx->dir) == NULL) {
        free(fx);
        return -1;
    }
    snprintf(fx->path, sizeof(fx->path), "%s/subgate.conf", fx->dir);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    int rc;

    unlink(fx->path);
    rc = rmdir(fx->dir);
    free(fx);
    return rc;
}

/* Loads text; checks rc, then the printed lines or the error text. */
static int run_file_case(const struct fixture *fx, const struct file_case *tc)
{
    struct cfg *c = NULL;
    char err[1024], want[1024];
    int rc, bad = 0;

    write_file(fx, tc->text, strlen(tc->text));
    err[0] = '\0';
    rc = cfg_load(fx->path, &c, err, sizeof(err));
    unlink(fx->path);
    if (rc != tc->rc) {
        print_error("%s: got rc %d (%s), want %d\n", tc->name, rc, err, tc->rc);
        cfg_free(&c);
        return -1;
    }
    if (rc < 0) {
        snprintf(want, sizeof(want), "%s%s", fx->path, tc->want);
        if (strcmp(err, want) != 0) {
            print_error("%s:\n  got  '%s'\n  want '%s'\n", tc->name, err, want);
            bad = 1;
        }
    } else {
        char *out = print_to_string(c);
        const char *w = tc->want;
        while (*w != '\0') {
            size_t n = strcspn(w, "\n");
            if (!has_line(out, w, n)) {
                print_error("%s: want line '%.*s' in:\n%s", tc->name, (int)n, w,
                            out);
                bad = 1;
            }
            w += n + (w[n] == '\n');
        }
        free(out);
        if (strcmp(c->path, fx->path) != 0) {
            print_error("%s: got path '%s', want '%s'\n", tc->name, c->path,
                        fx->path);
            bad = 1;
        }
    }
    cfg_free(&c);
    assert_null(c);
    return bad ? -1 : 0;
}

static void test_file_cases(void **state)
{
    const struct fixture *fx = *state;
    size_t i;
    int failed = 0;

    for (i = 0; i < sizeof(file_cases) / sizeof(file_cases[0]); i++)
        if (run_file_case(fx, &file_cases[i]) < 0)
            failed++;
    if (failed)
        fail_msg("%d case(s) failed", failed);
}

/* The stored fields and their units, beyond what cfg_print() shows. */
static void test_fields(void **state)
{
    const struct fixture *fx = *state;
    static const char text[] = "auth_fail_delay = 1500ms\n"
                               "smtp_timeout = 2m\n"
                               "retry_min = 10m\n"
                               "retry_max = 2h\n"
                               "max_queue_lifetime = 2d\n"
                               "max_message_size = 10M\n"
                               "relay_tls = verify\n"
                               "log_syslog = on\n";
    struct cfg *c = NULL;
    char err[512];

    write_file(fx, text, strlen(text));
    if (cfg_load(fx->path, &c, err, sizeof(err)) < 0)
        fail_msg("got error '%s', want success", err);
    unlink(fx->path);
    assert_int_equal(c->auth_fail_delay_ms, 1500);
    assert_int_equal(c->smtp_timeout_ms, 120000);
    assert_int_equal(c->signer_timeout_ms, 10000);
    assert_int_equal(c->relay_timeout_ms, 300000);
    assert_int_equal(c->retry_min_s, 600);
    assert_int_equal(c->retry_max_s, 7200);
    assert_int_equal(c->max_queue_lifetime_s, 172800);
    assert_int_equal(c->max_message_size, 10 * 1024 * 1024);
    assert_int_equal(c->max_recipients, 100);
    assert_int_equal(c->max_sessions, 1000);
    assert_int_equal(c->relay_tls, CFG_RELAY_TLS_VERIFY);
    assert_int_equal(c->log_syslog, 1);
    assert_string_equal(c->relay_host, "");
    assert_string_equal(c->user, "");
    cfg_free(&c);
}

/* Every default, as cfg_print() shows it. */
static void test_defaults(void **state)
{
    char host[256], shortname[256], want[4096];
    struct cfg *c = cfg_defaults();
    char *out;

    (void)state;
    assert_int_equal(gethostname(host, sizeof(host)), 0);
    host[sizeof(host) - 1] = '\0';
    snprintf(shortname, sizeof(shortname), "%.*s", (int)strcspn(host, "."),
             host);
    snprintf(want, sizeof(want),
             "node_name = %s\n"
             "hostname = %s\n"
             "state_dir = /var/lib/subgate\n"
             "database = /var/lib/subgate/subgate.db\n"
             "queue_dir = /var/lib/subgate/queue\n"
             "key_dir = /var/lib/subgate/keys\n"
             "run_dir = /var/lib/subgate/run\n"
             "pgp_dir = /var/lib/subgate/pgp\n"
             "submission_listen = 0.0.0.0:587 [::]:587\n"
             "submissions_listen = 0.0.0.0:465 [::]:465\n"
             "metrics_listen = \"\"\n"
             "tls_cert = \"\"\n"
             "tls_key = \"\"\n"
             "relay_host = \"\"\n"
             "relay_tls = may\n"
             "relay_ca_file = \"\"\n"
             "relay_port = 25\n"
             "relay_concurrency = 5\n"
             "relay_auth_user = \"\"\n"
             "relay_auth_password_file = \"\"\n"
             "max_message_size = 25M\n"
             "max_recipients = 100\n"
             "max_sessions = 1000\n"
             "auth_fail_delay = 1s\n"
             "auth_cache_ttl = 5m\n"
             "auth_cache_negative_ttl = 30s\n"
             "auth_cache_size = 10000\n"
             "scram_iterations = 8192\n"
             "ldap_timeout = 5s\n"
             "ldap_pool_size = 4\n"
             "smtp_timeout = 5m\n"
             "command_timeout = 1m\n"
             "data_timeout = 2m\n"
             "min_data_rate = 512\n"
             "max_conn_per_ip = 20\n"
             "conn_rate_per_ip = 300\n"
             "auth_fail_limit_ip = 20\n"
             "auth_fail_limit_account = 5\n"
             "auth_block_time = 15m\n"
             "member_msg_per_hour = 500\n"
             "member_rcpt_per_day = 2000\n"
             "tenant_msg_per_hour = 10000\n"
             "budget_report_interval = 1h\n"
             "remove_foreign_sender = no\n"
             "signer_timeout = 10s\n"
             "retry_min = 5m\n"
             "retry_max = 1h\n"
             "max_queue_lifetime = 5d\n"
             "delay_warning = 0s\n"
             "relay_timeout = 5m\n"
             "selector_template = %%Y%%m%%d-%%a-%%n\n"
             "rotate_after = 30d\n"
             "publish_lead = 1d\n"
             "retire_for = 7d\n"
             "revoke_for = 7d\n"
             "reveal_after = 0s\n"
             "dkim_ttl = 1h\n"
             "dns_timeout = 10s\n"
             "dns_resolver = \"\"\n"
             "user = \"\"\n"
             "chroot = \"\"\n"
             "signer_user = \"\"\n"
             "signer_program = \"\"\n"
             "reset_window = 1h\n"
             "reset_rate = 3\n"
             "log_syslog = no\n",
             shortname, host);
    out = print_to_string(c);
    if (strcmp(out, want) != 0)
        fail_msg("got:\n%s\nwant:\n%s", out, want);
    assert_string_equal(c->path, "");
    assert_int_equal(c->max_message_size, 25 * 1024 * 1024);
    assert_int_equal(c->auth_fail_delay_ms, 1000);
    assert_int_equal(c->smtp_timeout_ms, 300000);
    assert_int_equal(c->retry_min_s, 300);
    assert_int_equal(c->retry_max_s, 3600);
    assert_int_equal(c->max_queue_lifetime_s, 5 * 86400);
    assert_int_equal(c->relay_tls, CFG_RELAY_TLS_MAY);
    assert_int_equal(c->log_syslog, 0);
    free(out);
    cfg_free(&c);
}

/* What cfg_print() writes reads back to the same settings. */
static void test_print_reads_back(void **state)
{
    const struct fixture *fx = *state;
    static const char text[] = "node_name = n3\nstate_dir = /srv/x\n"
                               "submission_listen = 127.0.0.1:1,[::1]:2\n"
                               "submissions_listen =\n"
                               "auth_fail_delay = 250ms\n"
                               "max_message_size = 100000\n";
    struct cfg *c = NULL, *c2 = NULL;
    char err[512];
    char *out, *out2;

    write_file(fx, text, strlen(text));
    if (cfg_load(fx->path, &c, err, sizeof(err)) < 0)
        fail_msg("first load: got error '%s', want success", err);
    out = print_to_string(c);
    write_file(fx, out, strlen(out));
    if (cfg_load(fx->path, &c2, err, sizeof(err)) < 0)
        fail_msg("second load: got error '%s', want success", err);
    unlink(fx->path);
    out2 = print_to_string(c2);
    if (strcmp(out, out2) != 0)
        fail_msg("got:\n%s\nwant:\n%s", out2, out);
    free(out);
    free(out2);
    cfg_free(&c);
    cfg_free(&c2);
}

/* A line of 4096 octets is read, one of 4097 is refused; so is a NUL. */
static void test_long_line_and_nul(void **state)
{
    const struct fixture *fx = *state;
    char *text = malloc(2 * 4100);
    struct cfg *c = NULL;
    char err[512], want[512];
    int rc;

    assert_non_null(text);
    /* "user = " and 4089 octets: 4096 in all, then a second line. */
    memset(text, 'u', 4096);
    memcpy(text, "user = ", 7);
    memcpy(text + 4096, "\nnode_name = x\n", 16);
    write_file(fx, text, strlen(text));
    rc = cfg_load(fx->path, &c, err, sizeof(err));
    if (rc != 0)
        fail_msg("4096: got error '%s', want success", err);
    assert_int_equal(strlen(c->user), 4089);
    cfg_free(&c);

    /* Line 2 is "user = " and 4090 octets: 4097. */
    memcpy(text, "node_name = x\nuser = ", 21);
    memset(text + 21, 'u', 4090);
    memcpy(text + 21 + 4090, "\n", 2);
    write_file(fx, text, strlen(text));
    rc = cfg_load(fx->path, &c, err, sizeof(err));
    snprintf(want, sizeof(want), "%s:2: line longer than 4096 octets",
             fx->path);
    if (rc != -1 || strcmp(err, want) != 0)
        fail_msg("4097: got %d '%s', want -1 '%s'", rc, err, want);

    write_file(fx, "node_name = a\0b\n", 16);
    rc = cfg_load(fx->path, &c, err, sizeof(err));
    snprintf(want, sizeof(want), "%s:1: NUL octet in line", fx->path);
    if (rc != -1 || strcmp(err, want) != 0)
        fail_msg("nul: got %d '%s', want -1 '%s'", rc, err, want);
    unlink(fx->path);
    free(text);
}

static void test_missing_file(void **state)
{
    const struct fixture *fx = *state;
    struct cfg *c = NULL;
    char err[512], want[512];

    unlink(fx->path);
    assert_int_equal(cfg_load(fx->path, &c, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s: %s", fx->path, strerror(ENOENT));
    assert_string_equal(err, want);
    assert_null(c);
    /* NULL means the default file; on a test host it is usually absent. */
    if (cfg_load(NULL, &c, err, sizeof(err)) == 0)
        cfg_free(&c);
    else
        assert_memory_equal(err, SG_DEFAULT_CONFIG ":",
                            strlen(SG_DEFAULT_CONFIG) + 1);
    /* A short error buffer is cut, still terminated. */
    assert_int_equal(cfg_load(fx->path, &c, err, 8), -1);
    assert_int_equal(strlen(err), 7);
}

struct size_case {
    const char *text;
    int rc;
    size_t want;
};

static const struct size_case size_cases[] = {
    {"0", 0, 0},
    {"1024", 0, 1024},
    {"64K", 0, 65536},
    {"64k", 0, 65536},
    {"25M", 0, 26214400},
    {"1G", 0, 1073741824},
    {"18446744073709551615", 0, SIZE_MAX},
    {"18446744073709551616", -1, 0},
    {"17179869184G", -1, 0},
    {"", -1, 0},
    {"K", -1, 0},
    {"1KB", -1, 0},
    {"1T", -1, 0},
    {" 1", -1, 0},
    {"1 ", -1, 0},
};

struct dur_case {
    const char *text;
    int rc;
    unsigned long long want;
};

static const struct dur_case dur_cases[] = {
    {"0ms", 0, 0},
    {"0s", 0, 0},
    {"250ms", 0, 250},
    {"30s", 0, 30000},
    {"5m", 0, 300000},
    {"2h", 0, 7200000},
    {"1d", 0, 86400000},
    {"18446744073709551615ms", 0, 18446744073709551615ULL},
    {"18446744073709551615s", -1, 0},
    {"30", -1, 0},
    {"", -1, 0},
    {"s", -1, 0},
    {"1sec", -1, 0},
    {"1S", -1, 0},
    {"1.5s", -1, 0},
    {"-1s", -1, 0},
    {"1s ", -1, 0},
};

static void test_unit_parsers(void **state)
{
    size_t i;
    int failed = 0;

    (void)state;
    for (i = 0; i < sizeof(size_cases) / sizeof(size_cases[0]); i++) {
        const struct size_case *tc = &size_cases[i];
        size_t got = 0;
        int rc = cfg_parse_size(tc->text, &got);
        if (rc != tc->rc || (rc == 0 && got != tc->want)) {
            print_error("size '%s': got %d %zu, want %d %zu\n", tc->text, rc,
                        got, tc->rc, tc->want);
            failed++;
        }
    }
    for (i = 0; i < sizeof(dur_cases) / sizeof(dur_cases[0]); i++) {
        const struct dur_case *tc = &dur_cases[i];
        unsigned long long got = 0;
        int rc = cfg_parse_duration_ms(tc->text, &got);
        if (rc != tc->rc || (rc == 0 && got != tc->want)) {
            print_error("duration '%s': got %d %llu, want %d %llu\n", tc->text,
                        rc, got, tc->rc, tc->want);
            failed++;
        }
    }
    if (failed)
        fail_msg("%d case(s) failed", failed);
}

/* cfg_print_doc() covers every key cfg_print() shows, and the key
 * reference in docs/configuration.md is exactly its output. */
static void test_doc(void **state)
{
    static const char *const docs[] = {"docs/configuration.md",
                                       "../docs/configuration.md",
                                       "../../docs/configuration.md"};
    char *doc = NULL, *out, *file = NULL, *line;
    size_t n = 0, i;
    FILE *f = open_memstream(&doc, &n);
    struct cfg *c = cfg_defaults();
    int stale;

    (void)state;
    assert_non_null(f);
    cfg_print_doc(f);
    assert_int_equal(fclose(f), 0);
    out = print_to_string(c);
    for (line = out; *line != '\0'; line = strchr(line, '\n') + 1) {
        char head[128];
        snprintf(head, sizeof(head), "### %.*s\n", (int)strcspn(line, " "),
                 line);
        if (strstr(doc, head) == NULL)
            fail_msg("got no '%.*s' in cfg_print_doc()", (int)strlen(head) - 1,
                     head);
    }
    for (i = 0; i < sizeof(docs) / sizeof(docs[0]) && file == NULL; i++) {
        FILE *df = fopen(docs[i], "r");
        size_t len = 0;
        if (df == NULL)
            continue;
        file = calloc(1, 256 * 1024);
        assert_non_null(file);
        len = fread(file, 1, 256 * 1024 - 1, df);
        file[len] = '\0';
        fclose(df);
    }
    if (file == NULL)
        print_message("docs/configuration.md not found from here; "
                      "not compared\n");
    stale = file != NULL && strstr(file, doc) == NULL;
    free(file);
    free(out);
    free(doc);
    cfg_free(&c);
    if (stale)
        fail_msg("docs/configuration.md does not contain the output of "
                 "cfg_print_doc(); regenerate its key reference");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_file_cases, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fields, setup, teardown),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test_setup_teardown(test_print_reads_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_line_and_nul, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
        cmocka_unit_test(test_unit_parsers),
        cmocka_unit_test(test_doc),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
