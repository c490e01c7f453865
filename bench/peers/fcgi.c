/* libfcgi (fcgiapp) hello world, started by spawn-fcgi (fd 0 is the listen socket). */
#include <fcgiapp.h>

int main(void) {
    FCGX_Request r;
    FCGX_Init();
    FCGX_InitRequest(&r, 0, 0);
    while (FCGX_Accept_r(&r) >= 0) {
        FCGX_PutS("Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!", r.out);
        FCGX_Finish_r(&r);
    }
    return 0;
}
