/* cfgdoc: prints the configuration reference that common/cfg.c's table
 * holds (cfg_print_doc), for `make man`, which turns it into the key list
 * of subgate.conf(5). A build tool; it is not installed. */
#include <stdio.h>

#include "../common/cfg.h"

int main(void)
{
    cfg_print_doc(stdout);
    return fflush(stdout) == 0 ? 0 : 1;
}
