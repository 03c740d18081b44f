#!/usr/bin/perl
# dkimverify.pl: checks every DKIM-Signature of the message on standard
# input with Mail::DKIM, a verifier independent of subgate's signer and of
# dkimpy. Public keys come from DNSFILE instead of the DNS:
#
#     dkimverify.pl DNSFILE < message.eml
#
# DNSFILE holds "NAME TXT-TEXT" lines, or the zone-file lines that
# `subgate dns records DOMAIN` prints (quoted strings are joined). Prints one
# line per signature, "sig N d=DOMAIN s=SELECTOR a=ALGORITHM: RESULT", where
# RESULT is Mail::DKIM's word (pass, fail, invalid, temperror, none), then
# exits 0 when every signature passed, 1 otherwise, 2 on usage errors.
#
# Mail::DKIM::DNS::resolver() is the documented hook to replace the
# Net::DNS::Resolver that Mail::DKIM uses; the object given to it only needs
# send() and errorstring(), which the stub below answers from DNSFILE.
use strict;
use warnings;

use Mail::DKIM::Verifier;
use Mail::DKIM::DNS;
use Net::DNS;

package FileResolver;

sub new {
    my ( $class, $records ) = @_;
    return bless { records => $records, error => 'NOERROR' }, $class;
}

sub send {
    my ( $self, $name, $type ) = @_;
    my $key = lc $name;
    $key =~ s/\.$//;
    my $packet = Net::DNS::Packet->new( $name, $type, 'IN' );
    $packet->header->qr(1);
    my $text = $self->{records}{$key};
    if ( !defined $text || uc $type ne 'TXT' ) {
        $packet->header->rcode('NXDOMAIN');
        return $packet;
    }
    # A TXT record is a list of character-strings of at most 255 octets.
    my @chunks = unpack '(A255)*', $text;
    $packet->push(
        answer => Net::DNS::RR->new(
            name    => $key,
            type    => 'TXT',
            ttl     => 3600,
            txtdata => [@chunks],
        )
    );
    return $packet;
}

sub errorstring {
    my ($self) = @_;
    return $self->{error};
}

package main;

sub unescape_zone {
    my ($s) = @_;
    $s =~ s/\\(\d{3})/chr($1)/ge;
    $s =~ s/\\(.)/$1/g;
    return $s;
}

sub load_records {
    my ($path) = @_;
    my %records;
    open my $fh, '<', $path or die "dkimverify: $path: $!\n";
    while ( my $line = <$fh> ) {
        $line =~ s/\s+$//;
        $line =~ s/^\s+//;
        next if $line eq '' || $line =~ /^[#;]/;
        if ( $line =~ /^(\S+)\s+(?:\d+\s+)?(?:IN\s+)?TXT\s+(".*)$/i ) {
            my ( $name, $rest ) = ( $1, $2 );
            my @parts = $rest =~ /"((?:[^"\\]|\\.)*)"/g;
            $name = lc $name;
            $name =~ s/\.$//;
            $records{$name} = join '', map { unescape_zone($_) } @parts;
        }
        elsif ( $line =~ /^(\S+)\s+(.*)$/ ) {
            my $name = lc $1;
            $name =~ s/\.$//;
            $records{$name} = $2;
        }
    }
    close $fh;
    return \%records;
}

if ( @ARGV != 1 ) {
    print STDERR "usage: dkimverify.pl DNSFILE < message\n";
    exit 2;
}
Mail::DKIM::DNS::resolver( FileResolver->new( load_records( $ARGV[0] ) ) );

my $dkim = Mail::DKIM::Verifier->new();
binmode STDIN;
while ( my $line = <STDIN> ) {
    # Mail::DKIM wants CRLF line ends, as on the wire.
    $line =~ s/\r?\n\z/\r\n/;
    $dkim->PRINT($line);
}
$dkim->CLOSE();

my @sigs = $dkim->signatures;
my $all  = @sigs ? 1 : 0;
print "no DKIM-Signature\n" unless @sigs;
my $i = 0;
for my $sig (@sigs) {
    my $result = $sig->result // 'none';
    my $detail = $sig->result_detail // '';
    my $alg    = $sig->algorithm // '?';
    # Mail::DKIM before 1.2024 has no ed25519 (RFC 8463): it calls such a
    # signature invalid for an unsupported algorithm, which says nothing
    # about the signature itself.
    if ( $alg eq 'ed25519-sha256' && $detail =~ /unsupported|algorithm/i ) {
        printf "sig %d d=%s s=%s a=%s: unsupported (%s)\n", $i++,
          $sig->domain // '?', $sig->selector // '?', $alg, $detail;
        next;
    }
    printf "sig %d d=%s s=%s a=%s: %s\n", $i++, $sig->domain // '?',
      $sig->selector // '?', $alg, $result;
    $all = 0 if $result ne 'pass';
}
exit( $all ? 0 : 1 );
