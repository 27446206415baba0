# The Docker lab's spam filter (global, sieve_before in LMTP): a mail with the
# header "X-Lab-Junk: yes" or "[lab-junk]" in its Subject is filed into Junk, so a
# test can have a probe filed as spam; all other mail goes to INBOX.  The same
# markers as the embedded lab (lab/embedded/store.py); both tests ignore case.
require ["fileinto", "mailbox"];

if anyof (header :is "X-Lab-Junk" "yes",
          header :contains "Subject" "[lab-junk]") {
    fileinto :create "Junk";
    stop;
}
